"""The ``osmo ui`` tests: the server's safety (no browser) and the pages in a real headless Chromium."""

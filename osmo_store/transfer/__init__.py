"""Moving files between local folders and the store: scanning, upload, download."""

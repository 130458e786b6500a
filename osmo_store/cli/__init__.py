"""The ``osmo`` command line: click commands over the repository facade."""

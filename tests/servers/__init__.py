"""Real loopback servers the test suite starts itself: moto (S3) and Azurite (Azure Blob).

``fixtures.py`` holds the pytest fixtures; ``.ci/install-services.sh`` installs what they need.
"""

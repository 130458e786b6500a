"""Real loopback servers the test suite starts itself: moto (S3), Azurite (Azure Blob), Ceph radosgw,
etcd + kube-apiserver. They share one start/stop/cleanup life cycle (``base.py``).

``fixtures.py``, ``radosgw_fixtures.py`` and ``kube_fixtures.py`` hold the pytest fixtures;
``.ci/install-services.sh``, ``.ci/install-radosgw.sh`` and ``.ci/install-kube.sh`` install what they need.
"""

"""The config file (osmo_store/userconfig.py) read as it is found: missing (the usual case) is an empty
config; anything unreadable is one ``UsageError`` naming the file, never a traceback."""

from __future__ import annotations

import pytest

from osmo_store.errors import UsageError
from osmo_store.userconfig import UserConfig


def test_a_missing_file_is_an_empty_config(tmp_path):
    config = UserConfig.load(str(tmp_path / "config.yaml"))
    assert config.stores == {} and config.default_store is None


@pytest.mark.parametrize("content, needle", [
    (b"stores: [unclosed\n", "config.yaml"),
    (b"\xff\xfe not text\n", "config.yaml"),
    (b"- a list\n- not a mapping\n", "expected a mapping at the top level"),
    (b"stores:\n  lab: 3\n", "stores.lab"),
], ids=["bad-yaml", "not-utf8", "a-list", "bad-store"])
def test_a_bad_file_is_one_error_naming_it(tmp_path, content, needle):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        UserConfig.load(str(path))
    message = str(caught.value)
    assert message.startswith(f"config file {path}: ") and needle in message and "\n" not in message


def test_a_folder_where_the_file_should_be_is_an_error(tmp_path):
    (tmp_path / "config.yaml").mkdir()
    with pytest.raises(UsageError, match="config file .*config.yaml"):
        UserConfig.load(str(tmp_path / "config.yaml"))


def test_a_saved_config_reads_back_private_to_its_owner(tmp_path):
    path = str(tmp_path / "sub" / "config.yaml")
    config = UserConfig.load(path)
    config.add("lab", "s3://bucket/osmo", {"endpoint_url": "http://127.0.0.1:9000"})
    config.save()
    again = UserConfig.load(path)
    assert again.stores["lab"].url == "s3://bucket/osmo"
    assert again.stores["lab"].options == {"endpoint_url": "http://127.0.0.1:9000"}
    assert (tmp_path / "sub" / "config.yaml").stat().st_mode & 0o077 == 0

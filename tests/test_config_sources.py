"""What `from_config` accepts as its source: a path, a mapping or a list; anything else is a
ConfigError that says so (it was a bare TypeError from os.fspath)."""

from __future__ import annotations

from typing import Any

import pytest

from fanlog import JournalLogger
from fanlog.config import ConfigError, from_config


@pytest.mark.parametrize("source", [42, 3.5, range(2), object(), {"a", "b"}])
def test_a_source_that_is_no_path_mapping_or_list_is_refused(source: Any) -> None:
    expected = f"expected a path, a mapping or a list, got {type(source).__name__}"
    with pytest.raises(ConfigError, match=expected):
        from_config(source)


@pytest.mark.parametrize("wrap", [lambda p: p, str, lambda p: str(p).encode()])
def test_a_path_as_str_pathlike_or_bytes_is_read(tmp_path, wrap) -> None:
    path = tmp_path / "fanlog.yaml"
    path.write_text(f"type: journal\nsavedir: {tmp_path}\n")
    assert type(from_config(wrap(path))) is JournalLogger

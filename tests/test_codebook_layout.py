"""The names of a codebook folder and the one read of CURRENT (codebook_layout.py)."""

from __future__ import annotations

import pytest

from reasonedit_plugin.cli_codebook import check_out_folder
from reasonedit_plugin.codebook_layout import CURRENT, foreign_files, read_current
from reasonedit_plugin.errors import ReasonEditError


def test_read_current_missing_empty_and_named(tmp_path):
    assert read_current(tmp_path) is None
    (tmp_path / CURRENT).write_text("", encoding="utf-8")
    assert read_current(tmp_path) == ""
    (tmp_path / CURRENT).write_text("snapshot-000003\n", encoding="utf-8")
    assert read_current(tmp_path) == "snapshot-000003"


def test_read_current_unreadable_raises(tmp_path):
    (tmp_path / CURRENT).mkdir()  # a folder where the file should be: reading it fails
    with pytest.raises(OSError):
        read_current(tmp_path)


def test_foreign_files_ignores_what_a_writer_creates(tmp_path):
    for folder in ("images", "snapshot-000001", ".tmp-snapshot-000002.ab12"):
        (tmp_path / folder).mkdir()
    for file in ("LOCK", "audit.jsonl", CURRENT, ".tmp-CURRENT.cd34"):
        (tmp_path / file).touch()
    assert foreign_files(tmp_path) == []
    (tmp_path / "notes.txt").touch()
    (tmp_path / "a.csv").touch()
    assert foreign_files(tmp_path) == ["a.csv", "notes.txt"]


def test_writers_refuse_a_folder_with_foreign_files(tmp_path):
    """Both the CLI's --out check and a save refuse a folder of someone else's files, naming them."""
    from reasonedit_plugin.storage import _prepare_root

    (tmp_path / "LOCK").touch()
    check_out_folder(tmp_path)  # only a writer's own file: fine
    _prepare_root(tmp_path)
    (tmp_path / "results.json").touch()
    with pytest.raises(ReasonEditError, match="results.json"):
        check_out_folder(tmp_path)
    with pytest.raises(ReasonEditError, match="results.json"):
        _prepare_root(tmp_path)


@pytest.mark.parametrize("current, kind", [(None, "missing"), ("folder", "unreadable")])
def test_verify_names_a_missing_or_unreadable_current(tmp_path, current, kind):
    from reasonedit_plugin.manifest import verify_codebook

    (tmp_path / "snapshot-000001").mkdir()
    if current == "folder":
        (tmp_path / CURRENT).mkdir()
    report = verify_codebook(tmp_path)
    assert [(p.path, p.kind, p.area, p.fatal) for p in report.problems] == [(CURRENT, kind, "current", True)]
    assert "snapshot-000001" in report.problems[0].detail
    (tmp_path / "snapshot-000001").rmdir()
    if current is None:
        with pytest.raises(ReasonEditError, match="no ReasonEdit codebook"):
            verify_codebook(tmp_path)

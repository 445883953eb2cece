"""prefixlab/safe_paths.py: entries that leave their root are refused, links are never written through, appends are
whole or nothing, and a refused start removes the folders it made."""

import errno
import os

import pytest

from prefixlab.safe_paths import (UnsafePath, append_bytes, check_entry, inside, make_dirs, real_dir, remove,
                                  replace_bytes, unmake)


@pytest.fixture
def tree(tmp_path):
    """root/ (a run directory with ckpt/) beside outside/ (the user's files, which nothing may touch)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "ckpt").mkdir(parents=True)
    outside.mkdir()
    (outside / "precious.txt").write_text("keep")
    return root, outside


@pytest.mark.parametrize("entry, why", [("../x", "'..'"), ("ckpt/../../x", "'..'"), ("/etc/passwd", "absolute"),
                                        (".", "the directory itself"), ("./", "the directory itself"),
                                        ("", "non-empty"), (3, "non-empty")])
def test_entries_that_leave_the_root_or_name_it_are_refused(entry, why):
    with pytest.raises(UnsafePath, match=why):
        check_entry(entry, "manifest.json")


def test_a_link_on_the_way_out_is_refused_at_any_level(tree):
    root, outside = tree
    (root / "ckpt" / "deep").symlink_to(outside)  # second level
    (root / "up").symlink_to(outside)  # first level
    for entry in ("ckpt/deep/precious.txt", "up/precious.txt", "up/new/file"):
        with pytest.raises(UnsafePath, match="outside"):
            inside(root, entry)
    # the last component itself is not followed: the link is what gets removed or replaced
    assert inside(root, "up") == root.resolve() / "up"
    remove(inside(root, "up"))
    assert not (root / "up").exists() and (outside / "precious.txt").read_text() == "keep"


def test_a_link_inside_the_root_is_allowed(tree):
    root, _ = tree
    (root / "alias").symlink_to(root / "ckpt")
    assert inside(root, "alias/x") == (root / "ckpt").resolve() / "x"


def test_writes_replace_links_and_never_write_through(tree):
    root, outside = tree
    (root / "summary.md").symlink_to(outside / "precious.txt")
    replace_bytes(root / "summary.md", b"new")
    assert not (root / "summary.md").is_symlink() and (root / "summary.md").read_bytes() == b"new"
    (root / "plots").symlink_to(outside)
    real_dir(root / "plots")
    assert (root / "plots").is_dir() and not (root / "plots").is_symlink()
    (root / "results.jsonl").symlink_to(outside / "precious.txt")
    with pytest.raises(OSError) as e:
        append_bytes(root / "results.jsonl", b"{}\n")
    assert e.value.errno == errno.ELOOP
    (root / "tree").symlink_to(outside)
    remove(root / "tree")
    assert sorted(os.listdir(outside)) == ["precious.txt"] and (outside / "precious.txt").read_text() == "keep"


@pytest.mark.parametrize("short", [True, False])
def test_an_append_on_a_full_disk_leaves_no_part_of_it(tmp_path, monkeypatch, short):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    real_write = os.write

    def full(fd, data):
        if os.path.realpath(f"/proc/self/fd/{fd}") != str(path):
            return real_write(fd, data)
        if short:  # the disk takes part of it
            return real_write(fd, data[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as e:
        append_bytes(path, b'{"b": 2}\n{"c": 3}\n')
    assert e.value.errno == errno.ENOSPC and path.read_bytes() == b'{"a": 1}\n'


def test_a_refused_start_removes_only_the_empty_folders_it_made(tmp_path):
    (tmp_path / "runs").mkdir()
    created = make_dirs(tmp_path / "runs" / "a" / "b")
    assert created == [tmp_path / "runs" / "a", tmp_path / "runs" / "a" / "b"]
    (tmp_path / "runs" / "a" / "mine.txt").write_text("x")  # someone else's file appears meanwhile
    unmake(created)
    assert not (tmp_path / "runs" / "a" / "b").exists() and (tmp_path / "runs" / "a" / "mine.txt").exists()

"""Names that are data, as exactly one path segment; storage keys that could leave the root."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from tenant_backup.errors import ConfigurationError
from tenant_backup.segments import MAX_SEGMENT_BYTES, decode_segment, encode_segment, entry_name, spool_name
from tenant_backup.storage import Storage, is_partial

HOSTILE = [
    "..",
    ".",
    "x/../a",
    "a/b",
    "a%2Fb",
    "%",
    "%25",
    ".hidden",
    "..hidden",
    "étab-é",
    "東京",
    "emoji 🙂",
    "nul\x00byte",
    "back\\slash",
    "with space",
    " ",
    "/",
    "//",
    "/abs",
    "a/",
    "C:\\x",
    "s3://bucket/x",
    "x::y",
    "*",
    "?[a]",
    "~",
    "new\nline",
    "\t",
    "\u2028",
    "-",
    "_",
    "A",
    "a",
]
ONE_SEGMENT = re.compile(r"^[A-Za-z0-9_%-][A-Za-z0-9_.%-]*$")


def _check_one_segment(name: str) -> str:
    segment = encode_segment(name)
    assert ONE_SEGMENT.match(segment), (name, segment)
    assert segment not in ("", ".", "..") and "/" not in segment and "\\" not in segment
    assert decode_segment(segment) == name
    return segment


def test_plain_ids_stay_as_they_are() -> None:
    for plain in ["3f1a2b4c-0000-4000-8000-00000000abcd", "acme", "Acme_Corp-2", "v1.2", "a..b", "x."]:
        assert encode_segment(plain) == plain
        assert decode_segment(plain) == plain


def test_hostile_ids_become_one_segment_that_decodes_back_and_no_two_share_one() -> None:
    segments = {name: _check_one_segment(name) for name in HOSTILE}
    assert len(set(segments.values())) == len(HOSTILE)
    assert segments[".."] == "%2E." and segments["."] == "%2E" and segments[".hidden"] == "%2Ehidden"
    assert segments["a/b"] == "a%2Fb" and segments["a%2Fb"] == "a%252Fb" and segments["%"] == "%25"
    assert segments["x/../a"] == "x%2F..%2Fa"  # '..' inside one segment is just text


def test_random_ids_round_trip_as_one_segment() -> None:
    alphabet = "./\\%aZ9_- \x00\n:*?~é東🙂\u2028"
    rng = random.Random(20261122)
    seen: dict[str, str] = {}
    for _ in range(3000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        segment = _check_one_segment(name)
        assert seen.setdefault(segment, name) == name  # one to one


def test_an_empty_or_overlong_id_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="tenant id is empty"):
        encode_segment("")
    assert len(encode_segment("a" * MAX_SEGMENT_BYTES)) == MAX_SEGMENT_BYTES
    with pytest.raises(ConfigurationError, match=r"over the limit of 200; use a shorter tenant id"):
        encode_segment("é" * 34)  # 204 bytes once encoded
    with pytest.raises(ConfigurationError, match="not valid Unicode"):
        encode_segment("bad\udc80")


@pytest.mark.parametrize("text", ["", ".", "..", "%2e", "a/b", "%", "%ZZ", "%41", "%C3", "é", ".x", "a b", "%2F/"])
def test_decode_refuses_text_that_encode_never_writes(text: str) -> None:
    with pytest.raises(ConfigurationError):
        decode_segment(text)


def test_entry_names_keep_plain_table_names_and_encode_path_like_ones() -> None:
    for plain in ["ventes", "lignes_vente", "Catégories", "my table", "a.b", "manifest"]:
        assert entry_name(plain) == plain
    tables = ["../x", "a/b", "a%2Fb", ".hidden", "..", "back\\slash", "tab\tname"]
    entries = [entry_name(t) for t in tables]
    assert entries == ["%2E.%2Fx", "a%2Fb", "a%252Fb", "%2Ehidden", "%2E.", "back%5Cslash", "tab%09name"]
    names = entries + [entry_name(p) for p in ["ventes", "a%2Fb_"]]
    assert len(set(names)) == len(names)
    assert not any("/" in e or "\\" in e or e.startswith(".") for e in names)


@pytest.mark.parametrize("key", ["", "/etc/passwd", "a//b", "./x", "a/./b", "a/../b", "..", "../x", "a/"])
def test_storage_refuses_a_key_that_could_leave_the_root(tmp_path: Path, key: str) -> None:
    storage = Storage(f"file://{tmp_path}/store")
    with pytest.raises(ConfigurationError, match="could leave the storage root"), storage.write_atomic(key) as out:
        out.write(b"x")
    for call in (storage.path, storage.full_url, storage.exists, storage.remove, storage.open_read):
        with pytest.raises(ConfigurationError, match="could leave the storage root"):
            call(key)
    assert storage.key_in(f"{storage.url}/{key}") is None
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing written anywhere


def test_storage_lists_a_folder_never_a_string_prefix(tmp_path: Path) -> None:
    storage = Storage(f"file://{tmp_path}/store")
    for key in ["db/x/1.zip", "db/x%2Fy/2.zip", "db/xy/3.zip", "db/x/.1.zip.abcd1234.partial"]:
        with storage.write_atomic(key) as out:
            out.write(b"x")
    assert storage.list("db/x") == ["db/x/.1.zip.abcd1234.partial", "db/x/1.zip"]
    assert [k for k in storage.list("db") if is_partial(k)] == ["db/x/.1.zip.abcd1234.partial"]
    assert storage.list("db/none") == []


def test_spool_names_of_tables_that_differ_only_in_case_differ_without_case_too() -> None:
    names = ["Notes", "notes", "NOTES", "../x", "a/b", "billing.invoices"]
    spooled = [spool_name(n) for n in names]
    assert len({s.casefold() for s in spooled}) == len(names)
    assert all("/" not in s and not s.startswith(".") for s in spooled)
    assert spool_name("notes") == spool_name("notes")  # stable: a retried extraction writes the same file

"""Pure parts of the store: the key layout and the chunked table encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steering.store import codec
from steering.store.keys import Keys, check_component, range_end
from tests.support.store import make_table


@settings(max_examples=40, deadline=None)
@given(version=st.integers(1, 10**12), services=st.integers(1, 4), geos=st.integers(1, 30),
       chunk=st.integers(16, 4096))
def test_encode_decode_round_trip(version: int, services: int, geos: int, chunk: int) -> None:
    t = make_table(version, n_services=services, n_geos=geos)
    enc = codec.encode_table(t, chunk)
    assert all(len(c) <= chunk for c in enc.chunks)
    pointer = codec.parse_pointer(enc.pointer.to_json())
    assert isinstance(pointer, codec.Pointer) and pointer == enc.pointer
    assert codec.decode_table(pointer, enc.chunks).to_json() == t.to_json()


def test_same_table_same_blob_id_and_different_tables_differ() -> None:
    a, b = codec.encode_table(make_table(3)), codec.encode_table(make_table(3))
    assert a.pointer.blob == b.pointer.blob
    assert codec.encode_table(make_table(4)).pointer.blob != a.pointer.blob


def test_decode_rejects_missing_tampered_and_mismatched() -> None:
    enc = codec.encode_table(make_table(5), 64)
    assert len(enc.chunks) > 2
    with pytest.raises(ValueError, match="chunks present"):
        codec.decode_table(enc.pointer, enc.chunks[:-1])
    tampered = [enc.chunks[0][:-1] + bytes([enc.chunks[0][-1] ^ 1]), *enc.chunks[1:]]
    with pytest.raises(ValueError, match="checksum"):
        codec.decode_table(enc.pointer, tampered)
    other = codec.encode_table(make_table(6), 64)
    with pytest.raises(ValueError):
        codec.decode_table(enc.pointer, other.chunks)


@pytest.mark.parametrize("value", [b"{", b"[]", b'{"encoding":"gzip"}', b'{"encoding":"zlib+json","version":1}',
                                   b'{"encoding":"zlib+json","version":1,"blob":"../x","chunks":1,"sha256":"a"}'])
def test_parse_pointer_rejects_garbage(value: bytes) -> None:
    with pytest.raises(ValueError, match="routing/current"):
        codec.parse_pointer(value)


def test_inline_table_still_readable() -> None:
    t = make_table(2)
    assert codec.parse_pointer(t.to_json()) == t


def test_blob_compression_only_when_large() -> None:
    small = b'{"a":1}'
    assert codec.encode_blob(small) == small and codec.decode_blob(small) == small
    big = b'{"x":"' + b"y" * 2_000_000 + b'"}'
    stored = codec.encode_blob(big)
    assert len(stored) < 100_000 and codec.decode_blob(stored) == big


def test_keys_layout() -> None:
    k = Keys("/steering/v1")
    assert k.health("site-a") == b"/steering/v1/health/site-a"
    assert k.pin("www.example.com.", "eu") == b"/steering/v1/overrides/weights/www.example.com./eu"
    assert k.leader == b"/steering/v1/election/leader"
    assert k.routing_current == b"/steering/v1/routing/current"
    assert k.rel("overrides/evacuations/x") == b"/steering/v1/overrides/evacuations/x"
    assert k.strip(k.health("s")) == "health/s"
    assert k.version_of(k.routing_chunk(42, "abc", 0)) == 42
    # zero padding keeps key order equal to version order
    assert k.routing_version(9) < k.routing_version(10) < k.routing_version(10**15)
    assert range_end(b"/a/") == b"/a0"


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "x" * 300])
def test_bad_components(bad: str) -> None:
    with pytest.raises(ValueError, match="site"):
        check_component("site", bad)


@pytest.mark.parametrize("bad", ["", "/abs", "a//b", "a/../b", "a/./b", "trailing/"])
def test_bad_relative_keys(bad: str) -> None:
    with pytest.raises(ValueError, match="key"):
        Keys("/p").rel(bad)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=4000), st.integers(1, 9), st.integers(1, 3000))
def test_inflate_is_zlib_decompress_a_piece_at_a_time(data: bytes, level: int, piece: int) -> None:
    import zlib

    blob = zlib.compress(data * 50, level)  # repeated: one input byte inflates to many output bytes
    old = codec.INFLATE_PIECE
    codec.INFLATE_PIECE = piece  # small pieces: the loop runs many times on any input
    try:
        assert codec.inflate(blob) == zlib.decompress(blob)
        for cut in {1, len(blob) // 2, len(blob) - 1}:  # a stream cut short is an error, as in zlib
            with pytest.raises(zlib.error):
                codec.inflate(blob[:cut])
        with pytest.raises(zlib.error):
            codec.inflate(b"not zlib at all")
    finally:
        codec.INFLATE_PIECE = old

"""The offsets file: two checksummed slots, so a torn write never loses the saved positions."""

from __future__ import annotations

from pathlib import Path

from sidecarkit.agents.logs import offsets


def _entries(offset: int) -> dict[str, list[dict[str, object]]]:
    return {"app": [{"path": "/x.log", "dev": 1, "inode": 2, "offset": offset, "line": 1}]}


def test_offsets_survive_a_torn_write_and_grow_as_needed(tmp_path: Path) -> None:
    path = tmp_path / "offsets.json"
    store = offsets.OffsetStore(path)
    for offset in range(1, 6):
        store.save(_entries(offset), sync=False)
    assert offsets.OffsetStore(path).load()["app"][0]["offset"] == 5
    # A crash in the middle of the next save tears the slot being written (the older one).
    raw = bytearray(path.read_bytes())
    half = len(raw) // 2
    torn = 0 if raw[:half].split(b" ")[1] < raw[half:].split(b" ")[1] else half
    raw[torn + 30 : torn + 40] = b"XXXXXXXXXX"
    path.write_bytes(bytes(raw))
    assert offsets.OffsetStore(path).load()["app"][0]["offset"] == 5, "the intact slot wins"
    raw[(half - torn) + 30 : (half - torn) + 40] = b"XXXXXXXXXX"
    path.write_bytes(bytes(raw))
    assert offsets.OffsetStore(path).load() == {}, "both torn: start over, never garbage"
    big = {"app": [_entries(n)["app"][0] for n in range(200)]}
    store.save(big)
    assert len(offsets.OffsetStore(path).load()["app"]) == 200
    path.write_text('{"version":1,"sources":{"app":[{"offset":7}]}}')
    assert offsets.OffsetStore(path).load()["app"][0]["offset"] == 7, "plain JSON still reads"


def test_the_offsets_of_thousands_of_files_stay_about_twice_their_size(tmp_path: Path) -> None:
    store = offsets.OffsetStore(tmp_path / "offsets.json")
    entries = [
        {
            "path": f"/var/log/app/app-{i:05d}.log",
            "dev": 2049,
            "inode": 1_000_000 + i,
            "fingerprint": f"{i:032x}",
            "offset": 12_345 + i,
            "line": 120 + i,
        }
        for i in range(10_000)
    ]
    store.save({"app": entries})
    body = len(offsets.OffsetStore.encode({"app": entries}))
    size = (tmp_path / "offsets.json").stat().st_size
    assert size <= 2 * (body * 5 // 4 + 4096), f"{size} bytes for {body} bytes of offsets"
    assert offsets.OffsetStore(tmp_path / "offsets.json").load()["app"] == entries

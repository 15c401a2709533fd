"""The one rule of every command that writes: nothing is replaced that this project's tools did not write.

Each folder the tools write into keeps a record, RECORD_FILE, of the names they wrote there. Before anything loads,
a command checks the paths it will write: one that exists and is not in its folder's record belongs to someone
else, and the command stops, naming it. A folder replaced as a whole (a dataset) may hold recorded names only.
Names are recorded before they are written, so a write cut short still leaves a file the next run may replace.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

RECORD_FILE = ".llasa_written.json"


def recorded(folder) -> set[str]:
    """The names the tools wrote in `folder` (none when it has no readable record)."""
    try:
        names = json.loads((Path(folder) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()


def foreign_entries(folder) -> list[str]:
    """The names in `folder` that the tools did not write."""
    ours = recorded(folder) | {RECORD_FILE}
    return sorted(entry.name for entry in Path(folder).iterdir() if entry.name not in ours)


def is_ours(path) -> bool:
    """Whether the tools wrote `path`: a file named in its folder's record, or a folder holding only such files
    (an empty folder loses nothing either)."""
    path = Path(path)
    if path.is_dir():
        return not foreign_entries(path)
    return path.name in recorded(path.parent)


def check_replaceable(paths: Iterable, flag: str) -> None:
    """Refuse, naming them, the paths among `paths` that exist and were not written by the tools."""
    foreign = [path for path in map(Path, paths) if path.exists() and not is_ours(path)]
    if not foreign:
        return
    named = ", ".join(map(str, foreign[:3])) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise FileExistsError(
        f"{flag}: {named} already {'exists' if len(foreign) == 1 else 'exist'} and {'was' if len(foreign) == 1 else 'were'} "
        f"not written by this tool, which never replaces such files: pick another {flag}, or move "
        f"{'it' if len(foreign) == 1 else 'them'} away yourself."
    )


def record_written(folder, names: Iterable[str]) -> None:
    """Add `names` to the folder's record (created with the folder if needed), before they are written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(recorded(folder) | set(names))
    staged = folder / f"{RECORD_FILE}.{os.getpid()}"
    staged.write_text(json.dumps(names, indent=0) + "\n", encoding="utf-8")
    os.replace(staged, folder / RECORD_FILE)  # readers never see half a record


def claim(paths: Iterable, flag: str) -> list[Path]:
    """Check the paths (`check_replaceable`) and record them as the tools', folder by folder; returns them."""
    paths = [Path(path) for path in paths]
    check_replaceable(paths, flag)
    for folder in dict.fromkeys(path.parent for path in paths):
        record_written(folder, [path.name for path in paths if path.parent == folder])
    return paths


def write_text(path, text: str) -> Path:
    """Write a text file beside itself, then move it into place: an interrupted write never leaves half a file."""
    path = Path(path)
    staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
    staged.write_text(text, encoding="utf-8")
    os.replace(staged, path)
    return path


def staging_folder(target) -> Path:
    """A new empty folder beside `target` to write a whole folder in before `replace_folder` moves it into place."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def replace_folder(staging, target) -> None:
    """Record every file of `staging` as the tools' and move it to `target`; an old `target` (checked to be the
    tools' by `check_replaceable`) is removed only once the new one is in place."""
    staging, target = Path(staging), Path(target)
    record_written(staging, [entry.name for entry in staging.iterdir()])
    if not target.exists():
        staging.rename(target)
        return
    # A fresh empty folder of our own to move the old one into: no other folder is ever replaced.
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    target.rename(old / target.name)
    staging.rename(target)
    shutil.rmtree(old)


@contextmanager
def naming_folder(folder) -> Iterator[None]:
    """An OS error that names no file (pyarrow's "No space left on device") is raised again naming `folder`, the
    folder being written."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(folder)) from e

"""Writing files so that a killed process never leaves a half-written one behind, and one process at a time.

Temporary files and folders are created with the process's umask applied (as `open()` and `mkdir` would), not
with tempfile's private 0600/0700: the renamed result is an ordinary file that other users and tools can read.
"""

import fcntl
import os
import secrets
from contextlib import contextmanager
from pathlib import Path


def _unique_name(parent: Path, prefix: str, suffix: str, create) -> Path:
    """Create (exclusively) and return PARENT/PREFIX<random>SUFFIX with `create(path)`."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            create(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {parent}")


def temporary_file(parent: str | Path, prefix: str, suffix: str = ".tmp") -> Path:
    """A new empty file in `parent` with the usual permissions (0666 minus the umask)."""
    return _unique_name(Path(parent), prefix, suffix,
                        lambda path: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))


def temporary_dir(parent: str | Path, prefix: str) -> Path:
    """A new empty folder in `parent` with the usual permissions (0777 minus the umask)."""
    return _unique_name(Path(parent), prefix, "", lambda path: path.mkdir(0o777))


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_file(target.parent, prefix=f".{target.name}.")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")


@contextmanager
def exclusive(lock_file: str | Path):
    """Hold `lock_file`'s lock for the block: one process at a time (others wait). The system drops the lock
    when its holder dies, so a killed process never blocks the next."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield

"""User-facing errors: one line that names the problem and the fix."""


class SegkitError(Exception):
    """An error caused by the user's input; the CLI prints it without a traceback."""


def describe_os_error(err: OSError, action: str) -> SegkitError:
    """A one-line SegkitError for a failed write: disk full, permissions, read-only disk."""
    import errno

    where = f" {err.filename}" if err.filename else ""
    fixes = {errno.ENOSPC: "free disk space", errno.EDQUOT: "free disk space (quota exceeded)",
             errno.EACCES: "fix the permissions or choose another --out",
             errno.EPERM: "fix the permissions or choose another --out",
             errno.EROFS: "the disk is read-only; choose another --out"}
    fix = fixes.get(err.errno or 0, "check the disk and the path")
    return SegkitError(f"{action}{where} failed: {err.strerror or err}; {fix}")

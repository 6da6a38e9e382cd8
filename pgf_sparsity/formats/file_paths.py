"""Every file a run reads or writes goes through etils.epath, so that a workdir or model file may be a URL
(gs://..., where its backend is installed) as well as a local path."""
from etils import epath


def absolute(path: epath.PathLike) -> epath.Path:
  """An absolute epath.Path: local paths resolved against the working directory, URLs as given."""
  path = epath.Path(path)
  return path if is_url(path) else path.resolve()


def is_url(path: epath.PathLike) -> bool:
  return '://' in str(path)


def write_atomically(path: epath.PathLike, text: str) -> None:
  """Writes `text` beside `path` and renames it into place: a full disk leaves the old file whole."""
  path = epath.Path(path)
  staged = path.parent / (path.name + '.partial')
  try:
    staged.write_text(text)
  except OSError:
    staged.unlink(missing_ok=True)
    raise
  staged.replace(path)

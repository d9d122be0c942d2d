# convbp/_version.py is written by meson at build time (from _version.py.in).
__version__: str
build: dict[str, str]

"""Image I/O (placeholder; issue 3)."""


def read_image(path):
    raise NotImplementedError


def write_image(image, path, *, palette=None):
    raise NotImplementedError

"""palette() (placeholder; issue 4)."""


def palette(image, k=16, *, space="lab", max_pixels=None, seed=0, **kmeans_kw):
    raise NotImplementedError

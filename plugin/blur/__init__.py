"""Anonymize images: blur, pixelate or fill the regions around detected faces and plates.

The seed tool's maths is kept (mask from the boxes, Gaussian kernel, reflect padding at image
borders, per-channel convolution, smoothed mask, ``blurred * mask + image * (1 - mask)``) but
computed only around the boxes, with separable kernels, and rounded instead of truncated.

Definitions the tests check against a plain NumPy reference:

* Box geometry: each box is grown by ``box_scale`` around its centre (clipped to the image);
  corners are rounded to whole pixels (``floor(v + 0.5)``), at least 1 px. Ellipses are the
  inscribed ellipse, tested at pixel centres in exact integer arithmetic.
* Smoothed mask: union of the box masks, convolved with the seed's tent kernel of size
  ``feather``. Unlike the seed (zero padding), the mask is edge-replicated at image borders so a
  box touching the border stays fully obscured up to the border instead of fading to 50 %.
* Blur: the image is reflect-padded (``numpy.pad(mode="reflect")``, also for pads wider than
  the image) and convolved per channel with a separable kernel.
* Wide Gaussians (derived kernels, i.e. no ``kernel_size``, with sigma > ``MULTIRES_SIGMA`` =
  8 px) are computed at a reduced resolution, so their cost no longer grows with the kernel:
  with ``d = floor(sigma / 3)``, the reflect-padded image is averaged over d x d cells aligned
  to the image origin (cell ``(i, j)`` = pixels ``[i d, (i + 1) d) x [j d, (j + 1) d)``), the
  cell means are convolved with a sampled Gaussian of ``sqrt((sigma / d)^2 - 1/4)`` cells
  (window ``2 ceil(3 s) + 1``), and each pixel ``p`` takes the bilinear interpolation of the
  blurred cells at cell coordinate ``(p + 0.5) / d - 0.5`` per axis (half-pixel centres). The
  ``d^2 / 4`` subtracted is the variance the cell means and the interpolation add, so the
  impulse response has sigma^2 on average. At sigma > 8 px nothing finer than a few pixels
  survives the blur, so this is visually the same as the full-resolution Gaussian (not
  bit-identical to it: on a 1024 px photo with a face and a plate box, every pixel was within 1
  level of it, 0.045 levels on average; with ``sigma / 4`` cells, 0.035); the reference tests
  implement this definition independently.
* Several kernels in one image (adaptive strength): each kernel ``g`` has its own smoothed mask
  ``M_g``; the blurred value is ``sum_g M_g * B_g / sum_g M_g`` and the alpha is the smoothed
  union mask, so a single kernel reduces exactly to the seed's composite.
* Output: ``rint`` (round half to even), clipped to 0..255. Pixels where the smoothed mask is 0
  are copied byte for byte; alpha channels are never touched.

The package, one module a concern, each importing only those above it:
``settings`` (``BlurSettings``), ``kernels``, ``masks`` (box geometry, smoothed masks, regions),
``tf_ops`` (the TensorFlow engine), ``regions`` (obscuring images region by region).
"""

from __future__ import annotations

from .kernels import box_sigma, gaussian_kernel_1d, seed_kernel_1d, seed_kernel_std_px
from .masks import obscured_region
from .regions import anonymize_batch, anonymize_image, anonymize_pil_in_place, pool_workers
from .settings import BLUR_PARAMS, MODES, SHAPES, BlurSettings

__all__ = [
    "BLUR_PARAMS",
    "MODES",
    "SHAPES",
    "BlurSettings",
    "anonymize_batch",
    "anonymize_image",
    "anonymize_pil_in_place",
    "box_sigma",
    "gaussian_kernel_1d",
    "obscured_region",
    "pool_workers",
    "seed_kernel_1d",
    "seed_kernel_std_px",
]

"""The CPU device's image conversion: numpy's values bit for bit, and reused buffers never
overwrite a batch somebody still holds."""
import numpy as np
import pytest
import torch

from datasets.shards import expand
from datasets.shards.cpu_images import ImageConverter, float_planes


def _numpy_reference(nhwc: np.ndarray) -> np.ndarray:
    return (nhwc.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0))


def test_every_level_and_layout_equals_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    for shape in [(1, 16, 16, 3), (3, 128, 88, 3), (2, 16, 9, 2)]:
        nhwc = rng.integers(0, 256, shape, dtype=np.uint8)
        nhwc.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)  # all 256 levels appear
        assert np.array_equal(float_planes(nhwc), _numpy_reference(nhwc))


def test_cpu_expansion_equals_the_tensor_ops_cuda_runs():
    nhwc = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 32, 24, 3), dtype=np.uint8))
    cuda_ops = nhwc.permute(0, 3, 1, 2).to(torch.float32).mul_(float(np.float32(2 / 255))).sub_(1.0)
    assert torch.equal(expand.to_float_image(nhwc), cuda_ops)
    assert torch.equal(ImageConverter()(nhwc), cuda_ops)


def test_wrong_input_is_named():
    with pytest.raises(ValueError, match="uint8"):
        float_planes(np.zeros((2, 8, 8, 3), np.float32))


def test_converter_reuses_only_free_buffers():
    rng = np.random.default_rng(2)
    convert = ImageConverter()
    batches = [rng.integers(0, 256, (2, 8, 6, 3), dtype=np.uint8) for _ in range(5)]
    held = convert(batches[0])[1, 2]  # a view of the first batch outlives it
    kept = held.clone()
    for b in batches[1:]:
        out = convert(b)
        assert np.array_equal(out.numpy(), _numpy_reference(b))
        del out  # released: the next batch may reuse its buffer
    assert torch.equal(held, kept)
    assert len(convert.pool.buffers) == 2  # the held one, and one reused for the four others

"""Micro-batching of encoder calls across concurrent requests."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.batching import EncodeBatcher


class _RecordingEncoder:
    """Maps each image to its mean pixel, remembering every batch size.

    The first call waits until released, so that requests pile up behind
    it the way they do behind a slow forward pass.
    """

    def __init__(self):
        self.batch_sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.release.wait()
        self.batch_sizes.append(len(images))
        return images.reshape(len(images), -1).mean(axis=1, keepdims=True)


def _image(value: int) -> np.ndarray:
    return np.full((4, 3, 3), value, np.uint8)


@pytest.fixture
def recording():
    encoder = _RecordingEncoder()
    batcher = EncodeBatcher(encoder, max_batch=4)
    yield encoder, batcher
    encoder.release.set()
    batcher.close()


def _encode_concurrently(batcher, values, encoder) -> list:
    """Encodes one image per value from concurrent threads: the first
    request holds the worker while all the others queue up behind it."""
    with ThreadPoolExecutor(max_workers=len(values)) as pool:
        try:
            futures = [pool.submit(batcher.encode, _image(values[0]))]
            assert encoder.entered.wait(timeout=30)
            futures += [
                pool.submit(batcher.encode, _image(v)) for v in values[1:]
            ]
            deadline = time.monotonic() + 30
            while batcher._queue.qsize() < len(values) - 1:
                assert time.monotonic() < deadline, "requests were not queued"
                time.sleep(0.001)
        finally:
            encoder.release.set()
        return [future.result(timeout=30) for future in futures]


def test_each_request_gets_its_own_latent(recording):
    encoder, batcher = recording
    values = list(range(0, 200, 10))
    latents = _encode_concurrently(batcher, values, encoder)
    assert [float(z[0]) for z in latents] == values


def test_batches_never_exceed_max_batch(recording):
    encoder, batcher = recording
    _encode_concurrently(batcher, list(range(20)), encoder)
    assert max(encoder.batch_sizes) <= 4


def test_waiting_requests_share_full_batches(recording):
    encoder, batcher = recording
    _encode_concurrently(batcher, list(range(21)), encoder)
    assert encoder.batch_sizes == [1, 4, 4, 4, 4, 4]


def test_encoder_failure_reaches_every_waiting_request():
    def broken(images: np.ndarray) -> np.ndarray:
        raise RuntimeError("forward pass failed")

    batcher = EncodeBatcher(broken)
    try:
        with pytest.raises(RuntimeError, match="forward pass failed"):
            batcher.encode(_image(1))
    finally:
        batcher.close()


def test_batcher_keeps_working_after_a_failure():
    calls = []

    def flaky(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("first pass failed")
        return np.zeros((len(images), 2), np.float32)

    batcher = EncodeBatcher(flaky)
    try:
        with pytest.raises(RuntimeError):
            batcher.encode(_image(1))
        assert batcher.encode(_image(1)).shape == (2,)
    finally:
        batcher.close()


def test_encode_after_close_is_refused():
    batcher = EncodeBatcher(lambda images: images)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.encode(_image(1))


def test_warm_up_runs_every_power_of_two_up_to_max_batch():
    sizes = []

    def record(images: np.ndarray) -> np.ndarray:
        sizes.append(len(images))
        return np.zeros((len(images), 1), np.float32)

    batcher = EncodeBatcher(record, max_batch=8)
    try:
        batcher.warm_up(_image(0))
    finally:
        batcher.close()
    assert sizes == [1, 2, 4, 8]


@pytest.mark.parametrize("max_batch", [0, -1])
def test_max_batch_must_be_positive(max_batch):
    with pytest.raises(ValueError, match="max_batch"):
        EncodeBatcher(lambda images: images, max_batch=max_batch)

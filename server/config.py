"""Settings of the gRPC service."""

import dataclasses

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    # Loopback by default: exposing the service is a deliberate choice.
    host: str = "127.0.0.1"
    # 0 picks a free port (tests); the CLI defaults to 50051.
    port: int = 50051
    # Largest accepted upload; the gRPC message limit is set to match, so a
    # larger image is refused by gRPC itself with RESOURCE_EXHAUSTED.
    max_image_bytes: int = 10 * MIB
    # Largest accepted image in pixels, checked from the header before
    # decoding, so decompression bombs are refused cheaply.
    max_image_pixels: int = 40_000_000
    # Bounds on top_k and on offset + top_k, for paging.
    max_top_k: int = 100
    max_offset: int = 1000
    # Threads serving requests concurrently.
    max_workers: int = 16
    # Seconds in-flight requests get to finish on SIGTERM.
    grace_seconds: float = 5.0

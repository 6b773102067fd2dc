"""The `benchmark` job: a matrix-multiply burn that measures a node's FLOP/s.

It runs on the GPU when the task was given one and on the CPU otherwise, reports progress every
`report_every_s` (the unit of work between which it honours a graceful stop), and returns the
sustained FLOP/s over the whole run.
"""
from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.cluster.job_types import JobContext, JobType


class BenchmarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration_s: float = Field(10.0, gt=0, le=86400)
    matrix_size: int = Field(256, ge=8, le=16384)
    report_every_s: float = Field(0.5, gt=0, le=3600)
    dtype: str = Field("float32", pattern="^(float32|float16|bfloat16)$")


def run_benchmark(config: BenchmarkConfig, ctx: JobContext) -> dict[str, Any]:
    import torch  # imported here so nodes that never benchmark do not pay for it

    device = torch.device("cuda" if ctx.device == "cuda" and torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, config.dtype)
    n = config.matrix_size
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    flops_per_matmul = 2.0 * n ** 3
    matmuls = 0
    started = time.monotonic()
    next_report = started + config.report_every_s
    stopped = False
    while True:
        a = torch.matmul(a, b)
        a = a / a.norm()  # keeps values finite over thousands of products
        matmuls += 1
        now = time.monotonic()
        if now >= next_report or now - started >= config.duration_s:
            if device.type == "cuda":
                torch.cuda.synchronize()
                now = time.monotonic()
            elapsed = now - started
            progress = {
                "done": round(min(elapsed, config.duration_s), 3),
                "total": config.duration_s,
                "unit": "seconds",
                "matmuls": matmuls,
                "flops_per_s": matmuls * flops_per_matmul / elapsed,
            }
            if ctx.report(progress) and elapsed < config.duration_s:
                stopped = True
                break
            if elapsed >= config.duration_s:
                break
            next_report = now + config.report_every_s
    elapsed = time.monotonic() - started
    return {
        "device": str(device),
        "assigned_device": ctx.device,  # what Ray gave the task; `device` is what torch could use
        "matrix_size": n,
        "dtype": config.dtype,
        "matmuls": matmuls,
        "elapsed_s": elapsed,
        "flops_per_s": matmuls * flops_per_matmul / elapsed,
        "stopped_early": stopped,
    }


BENCHMARK = JobType(name="benchmark", config_model=BenchmarkConfig, run=run_benchmark, wants_gpu=True)

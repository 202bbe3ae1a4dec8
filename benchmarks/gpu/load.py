#!/usr/bin/env python3
"""A varying GPU load for meter checks: bursts of bf16 matrix products, on and off, for N seconds."""
import sys
import time

import torch

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.monotonic() + seconds
while time.monotonic() < end:
    burst = time.monotonic() + 0.7
    while time.monotonic() < burst:
        a @ a
    torch.cuda.synchronize()
    time.sleep(0.5)

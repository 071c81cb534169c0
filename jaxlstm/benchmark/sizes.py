"""The problems the benchmark times (the README's Performance sizes), and their FLOP counts."""

from __future__ import annotations

from dataclasses import dataclass, replace

PASSES = ("forward", "fwd_bwd")
"""forward: the outputs for the batch; fwd_bwd: the gradient of sum(outputs) w.r.t. the
parameters and the input."""

PASS_LABELS = {"forward": "forward", "fwd_bwd": "f+b"}


@dataclass(frozen=True)
class Size:
    """One problem: a single-layer float32 LSTM over a batch-major (B, T, I) input, H units."""

    name: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int

    def flops(self, pass_name: str) -> int:
        """FLOPs of one pass: forward = 2*B*T*4H*(I+H), forward+backward ~ 3x forward.

        Only the two matmuls per step are counted (the elementwise gate work is small beside
        them); the backward pass does twice the forward's matmul work (input and weight grads).
        """
        forward = 2 * self.batch * self.steps * 4 * self.hidden_size * (
            self.input_size + self.hidden_size
        )
        return forward if pass_name == "forward" else 3 * forward

    def at_steps(self, steps: int) -> Size:
        """This problem at sequence length `steps`, B, I and H kept: `S2@T=1024`."""
        return replace(self, name=f"{self.name}@T={steps}", steps=steps)

    def describe(self) -> str:
        """`S2 (B=32, T=100, I=32, H=128)`."""
        return (
            f"{self.name} (B={self.batch}, T={self.steps}, "
            f"I={self.input_size}, H={self.hidden_size})"
        )


SIZES = {
    size.name: size
    for size in (
        Size("S1", batch=1, steps=1000, input_size=16, hidden_size=64),  # latency, streaming
        Size("S2", batch=32, steps=100, input_size=32, hidden_size=128),  # typical research model
        Size("S3", batch=64, steps=200, input_size=128, hidden_size=256),  # medium
        Size("S4", batch=256, steps=50, input_size=512, hidden_size=512),  # throughput
    )
}

QUICK_SIZES = (Size("Q", batch=2, steps=20, input_size=8, hidden_size=16),)
"""For smoke tests: compiles and runs in well under a second per row."""

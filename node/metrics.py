"""A few Prometheus metrics, exposed in the text format (no extra dependency)."""
from __future__ import annotations

import threading
from collections import defaultdict


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = 0
        self.rejected: dict[str, int] = defaultdict(int)
        self.validation_seconds_sum = 0.0
        self.validation_count = 0

    def block_accepted(self, seconds: float) -> None:
        with self.lock:
            self.accepted += 1
            self.validation_seconds_sum += seconds
            self.validation_count += 1

    def block_rejected(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] += 1

    def render(self, *, height: int, peers: int, attempts_per_second: float, blocks_found: int,
               gauges: dict[str, tuple[str, float]] | None = None) -> str:
        """``gauges``: more gauges, name -> (help, value)."""
        with self.lock:
            lines = [
                "# HELP polchain_height Height of the best chain.", "# TYPE polchain_height gauge",
                f"polchain_height {height}",
                "# HELP polchain_peers Connected peers.", "# TYPE polchain_peers gauge",
                f"polchain_peers {peers}",
                "# HELP polchain_blocks_accepted_total Blocks accepted.", "# TYPE polchain_blocks_accepted_total counter",
                f"polchain_blocks_accepted_total {self.accepted}",
                "# HELP polchain_blocks_rejected_total Blocks rejected, by reason.",
                "# TYPE polchain_blocks_rejected_total counter",
            ]
            lines += [f'polchain_blocks_rejected_total{{reason="{r}"}} {n}' for r, n in sorted(self.rejected.items())]
            lines += [
                "# HELP polchain_mining_attempts_per_second Miner attempts per second.",
                "# TYPE polchain_mining_attempts_per_second gauge",
                f"polchain_mining_attempts_per_second {attempts_per_second:.3f}",
                "# HELP polchain_blocks_found_total Blocks this node mined.", "# TYPE polchain_blocks_found_total counter",
                f"polchain_blocks_found_total {blocks_found}",
                "# HELP polchain_validation_seconds Time to validate a block.",
                "# TYPE polchain_validation_seconds summary",
                f"polchain_validation_seconds_sum {self.validation_seconds_sum:.6f}",
                f"polchain_validation_seconds_count {self.validation_count}",
            ]
            for name, (help_, value) in (gauges or {}).items():
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {value:g}"]
            return "\n".join(lines) + "\n"

"""Same-process A/B of two copies of ``ops`` (probe32, probe34): the other copy is loaded as
package ``ops_base`` with its ``torch.library`` namespace renamed (both register their custom
ops), so both copies meet the same host at the same minutes; ``cpu_ms`` is the CPU time of a call."""
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from triton.testing import do_bench


def load_base(path: str, edits: dict[str, dict[str, str]] | None = None, package: str = "ops_base"):
    """Import the ``ops`` folder at ``path`` (e.g. a worktree of an earlier commit) as ``package``;
    ``edits`` maps a file under it to {old text: new text} replacements made in the copy (each old
    text must occur once: a probe's variant of the current kernels). Copies loaded under different
    package names coexist (each registers its ops in its own ``torch.library`` namespace)."""
    root = Path(tempfile.mkdtemp())
    shutil.copytree(path, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name, pairs in (edits or {}).items():
        src = root / package / name
        text = src.read_text()
        for old, new in pairs.items():
            assert text.count(old) == 1, f"{name} changed; update the probe's edit of: {old[:60]!r}"
            text = text.replace(old, new)
        src.write_text(text)
    lib = root / package / "common" / "library.py"
    namespace = "foveal_base" if package == "ops_base" else f"foveal_{package}"
    lib.write_text(lib.read_text().replace('LIBRARY = "foveal"', f'LIBRARY = "{namespace}"'))
    sys.path.insert(0, str(root))
    return importlib.import_module(package)


def cpu_ms(fn, n=50):
    """CPU ms per call of ``fn`` (launches not waited for), after 5 warm-up calls."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    c = (time.perf_counter() - t) / n * 1e3
    torch.cuda.synchronize()
    return c


def eager_host_ab(fb_base, fb_this, inf_base, inf_this, rounds: int = 5, calls: int = 100) -> dict:
    """Medians over ``rounds`` alternations of both copies' eager calls (probe34: NA, probe58: BRA):
    CPU us per forward+backward (``fb_b``, ``fb_n``) and per inference call (``inf_b``, ``inf_n``),
    ``calls`` calls each, and do_bench ms of the forward+backward (``ms_b``, ``ms_n``)."""
    m = {key: [] for key in ("fb_b", "fb_n", "inf_b", "inf_n", "ms_b", "ms_n")}
    for _ in range(rounds):
        m["fb_b"].append(cpu_ms(fb_base, calls) * 1e3)
        m["fb_n"].append(cpu_ms(fb_this, calls) * 1e3)
        m["inf_b"].append(cpu_ms(inf_base, calls) * 1e3)
        m["inf_n"].append(cpu_ms(inf_this, calls) * 1e3)
        m["ms_b"].append(do_bench(fb_base, warmup=10, rep=60))
        m["ms_n"].append(do_bench(fb_this, warmup=10, rep=60))
    return {key: statistics.median(v) for key, v in m.items()}


def alternating_medians(fb, fn, rounds: int = 5, rep: int = 100) -> tuple[float, float]:
    """Median ms of ``fb`` and ``fn`` over ``rounds`` alternations of ``do_bench`` medians, so both
    meet the same GPU and host state."""
    tb, tn = [], []
    for _ in range(rounds):
        tb.append(do_bench(fb, warmup=10, rep=rep))
        tn.append(do_bench(fn, warmup=10, rep=rep))
    return statistics.median(tb), statistics.median(tn)


def alternating_arms(step, arms: dict, rounds: int = 3, rep: int = 1500, warmup_steps: int = 3) -> dict:
    """{arm: (median do_bench ms, median CPU ms)} of ``step`` under each arm, where ``arms`` maps a
    name to a function that switches ``step`` to it (a model's ops copy, a helper...): each arm is
    warmed up (compiles, tunes), then ``rounds`` rounds alternate the arms, so all meet the same host."""
    times = {arm: [] for arm in arms}
    host = {arm: [] for arm in arms}
    for use in arms.values():
        use()
        for _ in range(warmup_steps):
            step()
    for _ in range(rounds):
        for arm, use in arms.items():
            use()
            times[arm].append(do_bench(step, warmup=100, rep=rep))
            host[arm].append(cpu_ms(step, 8))
    return {arm: (statistics.median(times[arm]), statistics.median(host[arm])) for arm in arms}

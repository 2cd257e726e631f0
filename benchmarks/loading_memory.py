"""Peak resident memory and seconds to load full-size SD v1.5, minisd vs diffusers, side by side.

Random weights in the official layouts, fp16: a diffusers folder (unet/, vae/, text_encoder/ with
safetensors) and one original-layout single file like `v1-5-pruned-emaonly-fp16.safetensors`
(diffusers reads it offline with `config=` the folder). Each load runs in a fresh process, so its
peak RSS (`ru_maxrss`) is its own; "extra" is the peak minus the same process's peak after its
imports, "x file" relates it to the bytes of weights read and "x diffusers" to diffusers' extra
for the same source. Both load in fp16 on the CPU, one thread; the files are in the page cache.

    python benchmarks/loading_memory.py [--workdir DIR]   # ~4.3 GB on disk, ~6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1.3  # the aim: a loaded, used model needs at most this many times the file size
SAME = 1.02  # ... and no more than diffusers (2% for measurement noise)

MAKE = """
import sys, shutil, torch
from pathlib import Path
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
from minisd.convert import folder_to_single_file
from minisd.loading import CONFIG_DIR, sd15_config
from minisd.shapes import tiny_model_path
out = Path(sys.argv[1])
torch.set_num_threads(1)
for name, build in (
    ("unet", lambda: UNet2DConditionModel.from_config(sd15_config("unet"))),
    ("vae", lambda: AutoencoderKL.from_config(sd15_config("vae"))),
    ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig(**sd15_config("text_encoder")))),
):
    build().half().save_pretrained(out / "folder" / name)
shutil.copytree(CONFIG_DIR / "scheduler", out / "folder" / "scheduler")
shutil.copytree(tiny_model_path() / "tokenizer", out / "folder" / "tokenizer")
shutil.copy(CONFIG_DIR / "model_index.json", out / "folder" / "model_index.json")
folder_to_single_file(out / "folder", out / "sd15.safetensors", dtype=torch.float16)
print("ok")
"""

LOAD = """
import json, re, sys, time, torch
torch.set_num_threads(1)
library, path, folder = sys.argv[1:4]
if library == "minisd":
    from minisd.pipelines import StableDiffusionPipeline
else:
    from diffusers import StableDiffusionPipeline

def memory():  # MB: the peak resident set so far, and the anonymous (not file-backed) part now
    status = open("/proc/self/status").read()
    return [int(re.search(key + r":\\s+(\\d+) kB", status).group(1)) / 1024 for key in ("VmHWM", "RssAnon")]

base, base_anon = memory()
start = time.perf_counter()
if library == "minisd":
    pipe = StableDiffusionPipeline.from_pretrained(path, config=folder, dtype=torch.float16, device="cpu")
elif path.endswith(".safetensors"):
    pipe = StableDiffusionPipeline.from_single_file(
        path, config=folder, torch_dtype=torch.float16, local_files_only=True, safety_checker=None
    )
else:
    pipe = StableDiffusionPipeline.from_pretrained(
        path, torch_dtype=torch.float16, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, local_files_only=True,
    )
seconds = time.perf_counter() - start
peak, anon = memory()
weights = [p for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()]
assert all(p.dtype == torch.float16 and p.device.type == "cpu" for p in weights)
for p in weights:  # read every weight once, as a first generation does
    p.sum()
used = memory()[0]
print(json.dumps({"seconds": seconds, "load": peak - base, "anon": anon - base_anon, "used": used - base}))
"""


def weights_mb(path: Path) -> float:
    """Megabytes of safetensors read when loading `path` (a file, or every weights file of a folder)."""
    files = [path] if path.is_file() else list(path.rglob("*.safetensors"))
    return sum(p.stat().st_size for p in files) / 2**20


def run(code: str, *args: str) -> str:
    """Run `code` in a fresh Python with `args`; its last line of output, or "failed: <reason>"."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    lines = result.stdout.strip().splitlines()
    if result.returncode or not lines:
        return "failed: " + (result.stderr.strip().splitlines() or ["no output"])[-1][:100]
    return lines[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", help="where to write (and keep) the random model (default: a temporary folder)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        folder, single = work / "folder", work / "sd15.safetensors"
        if not single.is_file():
            print(f"writing random full-size v1.5 weights (fp16) to {work} ...", flush=True)
            if (error := run(MAKE, str(work))).startswith("failed"):
                raise SystemExit(error)
        print(
            f"{'source':<20}{'MB':>6}  {'library':<10}{'seconds':>8}{'load MB':>9}{'anon MB':>9}"
            f"{'used MB':>9}{'x file':>8}{'load x diffusers':>18}{'used x diffusers':>18}"
        )
        verdicts = []
        for label, path in (("diffusers folder", folder), ("single file (fp16)", single)):
            size, ref = weights_mb(path), {}
            for library in ("diffusers", "minisd"):
                line = run(LOAD, library, str(path), str(folder))
                if line.startswith("failed"):
                    print(f"{label:<20}{size:>6.0f}  {library:<10} {line}", flush=True)
                    continue
                r = json.loads(line)
                ref = ref or r
                ratios = (r["used"] / size, r["load"] / ref["load"], r["used"] / ref["used"])
                print(
                    f"{label:<20}{size:>6.0f}  {library:<10}{r['seconds']:>8.1f}{r['load']:>9.0f}"
                    f"{r['anon']:>9.0f}{r['used']:>9.0f}{ratios[0]:>8.2f}{ratios[1]:>18.2f}{ratios[2]:>18.2f}",
                    flush=True,
                )
                if library == "minisd":
                    ok = r["used"] <= LIMIT * size and r["used"] <= SAME * ref["used"]
                    verdicts.append(f"{label}: {'yes' if ok else 'NO'}")
        print(f"minisd used within {LIMIT}x the file and within {SAME}x diffusers: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()

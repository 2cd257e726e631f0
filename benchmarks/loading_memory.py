"""Peak resident memory and seconds to load full-size SD v1.5, minisd vs diffusers, side by side.

Random weights in the official layouts, fp16: a diffusers folder (unet/, vae/, text_encoder/ with
safetensors) and one original-layout single file. Each load runs in a fresh process, so its peak
RSS (`ru_maxrss`) is its own; "extra" is the peak minus the same process's RSS after its imports,
and "x file" relates that to the size of the weights read. Both load in fp16 on the CPU.

    python benchmarks/loading_memory.py [--workdir DIR]   # ~3.4 GB on disk, some minutes on 2 cores
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

MAKE = """
import sys, torch
from pathlib import Path
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
from minisd.convert import folder_to_single_file
from minisd.loading import CONFIG_DIR, sd15_config
from minisd.shapes import tiny_model_path
import shutil
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
"""

LOAD = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
which, path, folder = sys.argv[1:4]
if which.startswith("minisd"):
    from minisd.pipelines import StableDiffusionPipeline
else:
    from diffusers import StableDiffusionPipeline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if which == "minisd":
    pipe = StableDiffusionPipeline.from_pretrained(path, config=folder, dtype=torch.float16, device="cpu")
elif path.endswith(".safetensors"):
    pipe = StableDiffusionPipeline.from_single_file(
        path, config=folder, torch_dtype=torch.float16, local_files_only=True, safety_checker=None
    )
else:
    pipe = StableDiffusionPipeline.from_pretrained(
        path, torch_dtype=torch.float16, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "extra_mb": (peak - base) / 1024}))
"""


def file_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*.safetensors")]
    return sum(p.stat().st_size for p in files) / 2**20


def run(code: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if result.returncode:
        return "failed: " + (result.stderr.strip().splitlines() or ["?"])[-1][:80]
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where to write the random model (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        if not (work / "sd15.safetensors").is_file():
            print(f"writing random full-size v1.5 weights to {work} ...", flush=True)
            if (error := run(MAKE, str(work))).startswith("failed"):
                raise SystemExit(error)
        folder, single = work / "folder", work / "sd15.safetensors"
        print(f"{'source':<22}{'library':<11}{'seconds':>9}{'peak MB':>10}{'extra MB':>10}{'x file':>8}")
        for label, path in (("diffusers folder", folder), ("single file (fp16)", single)):
            for library in ("minisd", "diffusers"):
                line = run(LOAD, library, str(path), str(folder))
                if line.startswith("failed"):
                    print(f"{label:<22}{library:<11} {line}")
                    continue
                r = json.loads(line)
                ratio = r["extra_mb"] / file_mb(path)
                print(
                    f"{label:<22}{library:<11}{r['seconds']:>9.1f}{r['peak_mb']:>10.0f}{r['extra_mb']:>10.0f}"
                    f"{ratio:>8.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

"""A stand-in ``nvidia-smi`` for the GPU tests: a shell script that answers the pool's query with the CSV
of the fake GPUs it is given (``osmo_run/local/gpus.py`` runs ``nvidia-smi --query-gpu=... --format=csv,
noheader,nounits``), and fails for any other question, so a test notices if the runner asks another one."""

from __future__ import annotations

from pathlib import Path

A40S_AND_L4 = [(0, "GPU-a40a0000-0000-4000-8000-000000000000", "NVIDIA A40", 46068),
               (1, "GPU-a40b1111-1111-4111-8111-111111111111", "NVIDIA A40", 46068),
               (2, "GPU-14c22222-2222-4222-8222-222222222222", "NVIDIA L4", 23034)]


def install_nvidia_smi(folder: Path, gpus=A40S_AND_L4) -> Path:
    """Write ``folder/nvidia-smi`` (executable); returns the folder, to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = "".join(f"{index}, {uuid}, {name}, {memory}\n" for index, uuid, name, memory in gpus)
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n"
                      'case "$1" in --query-gpu=index,uuid,name,memory.total) ;; '
                      '*) echo "unexpected: $*" >&2; exit 9;; esac\n'
                      f"cat <<'CSV'\n{csv}CSV\n")
    script.chmod(0o755)
    return folder

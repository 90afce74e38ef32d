"""Release builds of the repository's binaries, in the target folder cargo reports
(CARGO_TARGET_DIR is honoured)."""

import json
import os
import subprocess


def release_dir(repo):
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=repo, check=True, capture_output=True, text=True)
    return os.path.join(json.loads(meta.stdout)["target_directory"], "release")


def build_pgfleet(repo, log):
    log("cargo build --release")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=repo, check=True)
    return os.path.join(release_dir(repo), "pgfleet")


def build_forward(repo, log):
    log("cargo build --release --example forward")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "forward"],
                   cwd=repo, check=True)
    return os.path.join(release_dir(repo), "examples", "forward")

"""Where the thresholds of tests/test_real_images.py come from: its runs over seeds and thread counts.

    python benchmarks/real_test_thresholds.py --seeds 1 2 3 --threads 1 2 [--zero-loss]

Prints, per (threads, seed): the ImageNet start's mAP, the ground-truth run's last mAP and the DMI
run's last-epoch pseudo-label quality. ``--zero-loss`` replaces every objective's loss by zero (the
sabotage the test must catch).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, torch
from pathlib import Path
torch.set_num_threads({threads})
import test_real_images as t  # from tests/, on PYTHONPATH
if {zero}:
    from dmireid.objectives import OBJECTIVES
    for cls in {{OBJECTIVES.get('dmi'), OBJECTIVES.get('cc')}}:
        original = cls.loss
        def zero(self, f, y, original=original):
            loss, terms = original(self, f, y)
            return loss * 0, terms
        cls.loss = zero
tmp = Path({tmp!r})
start = t.imagenet_map({seed})
gt = t.real_run(tmp / 'gt', ['pseudo_labels.labeler=ground_truth', f'train.epochs={{t.GT_EPOCHS}}',
                             f'train.iters={{t.GT_ITERS}}', f'train.eval_every={{t.GT_EPOCHS}}'], seed={seed})[-1]
dmi = t.real_run(tmp / 'dmi', ['train.epochs=2', 'train.iters=10', 'train.eval_every=100'], seed={seed})[-1]
print(json.dumps({{'imagenet_mAP': start, 'gt_mAP': gt['mAP'], 'gt_mAP_ema': gt.get('mAP_ema'),
                  'dmi_pair_precision': dmi['pair_precision'], 'dmi_nmi': dmi['nmi'], 'dmi_clusters': dmi['num_clusters']}}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--zero-loss", action="store_true")
    args = parser.parse_args()
    for threads in args.threads:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                code = CHILD.format(threads=threads, zero=args.zero_loss, tmp=tmp, seed=seed)
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     env={"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
                                          "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "tests")},
                                     cwd=ROOT)
                line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr.strip()[-300:]
                print(json.dumps({"threads": threads, "seed": seed, "zero_loss": args.zero_loss}), line, flush=True)


if __name__ == "__main__":
    main()

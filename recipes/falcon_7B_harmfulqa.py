"""Out of distribution, the paper's setting: falcon_7B's HH-RLHF value model applied to HarmfulQA (Kong et al. 2024,
section 6; GPU and hub access).

    python recipes/falcon_7B_harmfulqa.py --dry_run True                # print the stage commands
    python recipes/falcon_7B_harmfulqa.py --judge True                  # run them, with the judge (the paper's figure)
    python recipes/falcon_7B_harmfulqa.py --judge True --from_step 5    # where recipes/falcon_7B_hh_rlhf.py
                                                                        # already ran here

Steps 1-4 are recipes/falcon_7B_hh_rlhf.py's stages 1-3 (stage 1, reward labels, the value model: trained on HH-RLHF
only).
Then the 1,960 questions of declare-lab/HarmfulQA (--dataset_name harmfulqa: its one split, 'train' on the hub,
answers the test split) are answered by base, RE-Control and RE-Control + Prompting at HH-RLHF's alpha 0.2, 200 updates
(no tuning on HarmfulQA), scored by the HH-RLHF reward model and stage 6, and RE-Control and RE-Control + Prompting are
judged against base (stage 7, --judge True: needs OPENAI_API_KEY or an OpenAI-compatible server). The paper reports
only the win rate here: the reward model is not reliable on these prompts, so its rewards are a diagnostic.
Reproduces: the paper's out-of-distribution experiment, HarmfulQA / Falcon-7B: RE-Control + Prompting has the highest
win rate against base (the exact figures were not recovered, so none is given here).
"""
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# and this folder holds the recipe it extends
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from falcon_7B_hh_rlhf import SETTING as TRAINED  # noqa: E402

from utils import cli  # noqa: E402
from utils.recipes import OodSetting, main  # noqa: E402

SETTING = OodSetting(trained=TRAINED, dataset_name="harmfulqa",
                     reproduces="the out-of-distribution experiment, HarmfulQA / Falcon-7B with the HH-RLHF value "
                                "model: RE-Control + Prompting has the highest judged win rate against base")

if __name__ == "__main__":
    cli.main_guard(lambda: main(SETTING, __doc__))

"""Stage 7: pairwise win rate judged by an OpenAI-compatible chat model (GPT-4 in the paper).

The paper's command line (needs OPENAI_API_KEY, or Azure's variables):
    python gpt4_eval.py --run_name_red llama3_8B_shp_0.001_30_1.0 --run_name_blue dataset/dataset_prefer

Any OpenAI-compatible server (vLLM, llama.cpp, a local test server):
    python gpt4_eval.py --run_name_red smollm2_135M_demo_0.001_td1_vf0.1_es_10_3.0 \\
        --run_name_blue smollm2_135M_demo_base \\
        --base_url http://127.0.0.1:8000/v1 --judge_model my-judge

The judge scores both answers 1-10 and writes the two scores on its first line; the order of the two answers is
drawn per prompt from --seed. win = red strictly higher. A failed or unparsable judgment is retried with backoff,
then recorded as an error: never a tie, and left out of the win rate. Judgments are appended to
gpt-4-evaluations/{red}_{blue}.jsonl as they arrive, so an interrupted run resumes where it stopped;
gpt-4-evaluations/{red}_{blue}.json holds win / tie / lose / errors / win rate and every judgment.
The API key is read from OPENAI_API_KEY (or AZURE_OPENAI_API_KEY) and never written anywhere.
"""
from utils import cli
from utils.configs import JudgeConfig
from utils.stages.stage7_judge import run_gpt4_eval


def build_parser():
    return cli.build_parser(__doc__, JudgeConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), JudgeConfig, argv)


def main(argv=None):
    run_gpt4_eval(parse_args(argv))


if __name__ == "__main__":
    cli.main_guard(main)

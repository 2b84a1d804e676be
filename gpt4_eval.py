"""Stage 7: pairwise win rate judged by an OpenAI-compatible chat model (GPT-4 in the paper).

The paper's command line (needs OPENAI_API_KEY, or Azure's variables):
    python gpt4_eval.py --run_name_red llama3_8B_shp_0.001_30_1.0 --run_name_blue dataset/dataset_prefer

Any OpenAI-compatible server (vLLM, llama.cpp, a local test server):
    python gpt4_eval.py --run_name_red smollm2_135M_demo_0.001_td1_vf0.1_es_10_3.0 --run_name_blue smollm2_135M_demo_base \\
        --base_url http://127.0.0.1:8000/v1 --judge_model my-judge

The judge scores both answers 1-10 and writes the two scores on its first line; the order of the two answers is
drawn per prompt from --seed. win = red strictly higher. A failed or unparsable judgment is retried with backoff,
then recorded as an error: never a tie, and left out of the win rate. Judgments are appended to
gpt-4-evaluations/{red}_{blue}.jsonl as they arrive, so an interrupted run resumes where it stopped;
gpt-4-evaluations/{red}_{blue}.json holds win / tie / lose / errors / win rate and every judgment.
The API key is read from OPENAI_API_KEY (or AZURE_OPENAI_API_KEY) and never written anywhere.
"""
from utils import cli
from utils.stages.stage7_judge import run_gpt4_eval


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--run_name_red", type=str, required=True, help="the run judged: response/{red}.json")
    parser.add_argument("--run_name_blue", type=str, required=True,
                        help="the reference: another run's name (response/{blue}.json), or a file of preferred "
                             "responses [{\"prefer\": text}, ...] aligned with red's prompts (.json optional)")
    parser.add_argument("--judge_model", type=str, default="gpt-4", help="judge model (Azure: the deployment name)")
    parser.add_argument("--base_url", type=str, default=None,
                        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: OpenAI, or Azure "
                             "when AZURE_OPENAI_ENDPOINT is set)")
    parser.add_argument("--num_samples", type=cli.positive_int, default=100,
                        help="prompts judged, drawn from --seed (the paper's HH protocol uses 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt sample and of the answer order")
    parser.add_argument("--max_retries", type=cli.nonnegative_int, default=4,
                        help="retries of a failed or unparsable judgment before it is recorded as an error")
    parser.add_argument("--retry_delay", type=cli.nonnegative_float, default=2.0,
                        help="seconds before the first retry; doubled at each further retry")
    parser.add_argument("--timeout", type=cli.positive_float, default=120.0, help="seconds per judge request")
    parser.add_argument("--max_tokens", type=cli.positive_int, default=512, help="length limit of a judgment")
    cli.add_output_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    run_gpt4_eval(parse_args(argv))


if __name__ == "__main__":
    cli.main_guard(main)

"""Stage 6: repetition (rep-2/3/4), diversity, coherence and response length of a run's responses.

The paper's command line:
    python metrics.py --run_name llama3_8B_shp_0.001_30_1.0

Offline (SimCSE's BERT is on the hub; the MiniLM folder from PyPI stands in):
    python metrics.py --run_name smollm2_135M_demo_base --embedding_model minilm

rep-n = 100 * (1 - unique n-grams / (n-grams + 1)) over nltk word tokens; diversity = prod over n = 2, 3, 4 of
(1 - rep-n / 100), averaged over responses. Coherence = cosine similarity of the SimCSE embeddings of each prompt
and its response, averaged. Each generation is cut at the user's next turn first.
Writes evaluations/{run_name}.json with the averages and one row per response.
"""
from utils import cli
from utils.configs import MetricsConfig
from utils.stages.stage6_metrics import run_metrics


def build_parser():
    return cli.build_parser(__doc__, MetricsConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), MetricsConfig, argv)


def main(argv=None):
    run_metrics(parse_args(argv))


if __name__ == "__main__":
    cli.main_guard(main)

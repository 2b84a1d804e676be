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
from utils.io import load_records, output_path, response_path, run_settings, save_json, write_sidecar
from utils.metrics import SIMCSE_MODEL, load_encoder, text_metrics
from utils.runs import refuse_overwrite


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--run_name", type=str, required=True, help="run name: evaluates response/{run_name}.json")
    parser.add_argument("--embedding_model", type=str, default=SIMCSE_MODEL,
                        help="sentence encoder for coherence, read through simcse.SimCSE: a hub id, a folder, or "
                             "'minilm' (the all-MiniLM-L6-v2 folder from PyPI, offline)")
    parser.add_argument("--device", type=str, default="cpu", help="device of the sentence encoder")
    parser.add_argument("--batch_size", type=cli.positive_int, default=64, help="texts per encoder batch")
    cli.add_output_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out = output_path(args.output_dir, "evaluation", args.run_name)
    refuse_overwrite(out, run_settings(args), args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    records = load_records(response_path(args.output_dir, args.run_name), "inference_intervention.py")
    # ------------------------------------------------------------------------------------------------------ run
    summary, rows, tokenizers = text_metrics(records, load_encoder(args.embedding_model, args.device),
                                             args.batch_size)
    # ------------------------------------------------------------------------------------------------------ save
    save_json({"run": args.run_name, "tokenizer": tokenizers, "embedding_model": args.embedding_model,
               **summary, "rows": rows}, out)
    write_sidecar(out, args)
    print(f"{args.run_name}: diversity {summary['diversity']:.3f}, coherence {summary['coherence']:.3f}, rep-2 {summary['rep-2']:.2f}, "
          f"rep-3 {summary['rep-3']:.2f}, rep-4 {summary['rep-4']:.2f}, length {summary['length']:.1f} "
          f"(nltk tokenizer: {', '.join(tokenizers)}) -> {out}")


if __name__ == "__main__":
    cli.main_guard(main)

"""Stage 6: repetition, diversity, coherence and length of a run's responses (see metrics.py for the files)."""
from utils.io import file_sha256, load_records, output_path, response_path, run_settings, save_json, write_sidecar
from utils.metrics import load_encoder, text_metrics
from utils.runs import refuse_overwrite, written_with


def run_metrics(args, encoder=None):
    """Stage 6 (a MetricsConfig), with the sentence encoder already loaded if given, skipped if its result was
    written from the same file and settings; returns the result's path."""
    out = output_path(args.output_dir, "evaluation", args.run_name)
    responses = response_path(args.output_dir, args.run_name)
    settings = run_settings(args, responses_sha256=file_sha256(responses))
    if written_with(out, settings):
        print(f"{args.run_name}: already evaluated with these settings -> {out} (skipped)")
        return out
    refuse_overwrite(out, settings, args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    records = load_records(responses, "inference_intervention.py")
    # ------------------------------------------------------------------------------------------------------ run
    summary, rows, tokenizers = text_metrics(records, encoder or load_encoder(args.embedding_model, args.device),
                                             args.batch_size)
    # ------------------------------------------------------------------------------------------------------ save
    save_json({"run": args.run_name, "tokenizer": tokenizers, "embedding_model": args.embedding_model,
               **summary, "rows": rows}, out)
    write_sidecar(out, args, settings)
    print(f"{args.run_name}: diversity {summary['diversity']:.3f}, coherence {summary['coherence']:.3f}, "
          f"rep-2 {summary['rep-2']:.2f}, "
          f"rep-3 {summary['rep-3']:.2f}, rep-4 {summary['rep-4']:.2f}, length {summary['length']:.1f} "
          f"(nltk tokenizer: {', '.join(tokenizers)}) -> {out}")
    return out

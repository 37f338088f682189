"""Dataset card of ``jadwal build ssum``: ``card.md`` (counts, hours, filters, ROUGE, examples) and
``card.png`` (length histograms and reject reasons)."""
from __future__ import annotations

from pathlib import Path

from ..workspace import atomic_path, atomic_write


def _plot(png: Path, metrics: list[dict], rejected: dict[str, int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    panels = [
        ("duration_s", "window duration (s)"),
        ("transcript_words", "transcript words"),
        ("summary_words", "summary words"),
        ("summary_ratio", "summary / transcript words"),
        ("novelty", "summary bigram novelty"),
    ]
    for ax, (key, title) in zip(axes.flat, panels):
        vals = [m[key] for m in metrics]
        if vals:
            ax.hist(vals, bins=min(30, max(5, len(vals) // 3)), color="#2a7f62")
        else:
            ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
    ax = axes.flat[5]
    if rejected:
        names = list(rejected)
        ax.barh(names, [rejected[n] for n in names], color="#b5523b")
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no rejects", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("rejected windows by reason")
    fig.suptitle(f"ssum: {len(metrics)} windows")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png", metadata={"Software": None})
    plt.close(fig)


def _rouge_table(title: str, r: dict | None) -> list[str]:
    if not r:
        return []
    lines = [f"**{title}** (n = {r['n']})", "", "| metric | P | R | F1 |", "|---|---|---|---|"]
    for t in ("rouge1", "rouge2", "rougeL"):
        if t in r:
            lines.append(f"| {t} | {r[t + '_precision']:.3f} | {r[t + '_recall']:.3f} | {r[t]:.3f} |")
    return lines + [""]


def _clip(s: str | None, n: int = 300) -> str:
    s = (s or "").replace("\n", " ").replace("|", "/")
    return s if len(s) <= n else s[:n] + " …"


def write_card(out_dir: Path, stats: dict, metrics: list[dict], rows: list[dict], cfg, reasons: dict) -> tuple[Path, Path]:
    md, png = out_dir / "card.md", out_dir / "card.png"
    _plot(png, metrics, stats["rejected"])
    s = stats
    summ = s["summarizer"]
    lo, hi = cfg.ratio_bounds()
    L = [
        f"# {s['name']} — speech summarization (AraMega-SSum style)",
        "",
        f"Built by `jadwal build ssum` from dataset `{s['source']}`: long-form audio cut into windows of "
        f"{cfg.min_seconds:g}–{cfg.max_seconds:g} s (target {cfg.target_seconds:g} s) at segment/sentence "
        f"boundaries, each summarized by `{summ['name']}` (version `{summ['version']}`) "
        f"at target ratio {cfg.target_ratio:g}, then filtered.",
        "",
        "## Counts",
        "",
        "| | |",
        "|---|---|",
        f"| source rows | {s['source_rows']} |",
        f"| long-form units | {', '.join(f'{k}: {v}' for k, v in s['units'].items()) or 0} |",
        f"| source hours (units) | {s['source_hours']:.3f} |",
        f"| candidate windows | {s['windows']} |",
        f"| summarized | {s['summarized']} |",
        f"| **accepted rows** | **{s['accepted']}** |",
        f"| accepted hours | {s['hours']:.3f} |",
        f"| accepted windows per source hour | {s['windows_per_source_hour']} |",
        f"| summarization | {summ['seconds']} s, {summ['windows_per_s']} windows/s, {summ['words_per_s']} words/s"
        + (f", {summ['generated_tokens_per_s']} generated tokens/s" if summ.get("generated_tokens_per_s") else "") + " |",
        "",
        "Means over accepted rows: "
        + ", ".join(f"{k} {v}" for k, v in s["mean"].items() if v is not None),
        "",
        "## Filters",
        "",
        f"Summary/transcript word ratio in [{lo:.3f}, {hi:.3f}]; Arabic-script letters ≥ {cfg.min_arabic_ratio}; "
        f"bigram novelty in [{cfg.min_novelty}, {cfg.max_novelty}]; near-duplicate transcripts at MinHash "
        f"Jaccard ≥ {cfg.near_dup_threshold}; windows with fewer than {cfg.min_words} words skipped.",
        "",
        "| reason | rejected | meaning |",
        "|---|---|---|",
    ]
    for reason, n in s["rejected"].items():
        L.append(f"| `{reason}` | {n} | {reasons.get(reason, '')} |")
    if not s["rejected"]:
        L.append("| — | 0 | |")
    L += ["", "## ROUGE", ""]
    L += _rouge_table("summary vs its transcript (recall = coverage of the transcript)", s["rouge_vs_transcript"])
    L += _rouge_table("summary vs the extractive (TextRank) reference", s["rouge_vs_extractive"])
    if not (s["rouge_vs_transcript"] or s["rouge_vs_extractive"]):
        L.append("(no accepted rows)")
    L += ["", "## Distributions", "", "![lengths and filters](card.png)", "", "## Examples", ""]
    for r in rows[:3]:
        L += [
            f"**{r['id']}** — {r['duration_s']:.1f} s from `{r['audio_path']}` @ {r['offset_s']:.1f} s",
            "",
            f"- instruction: {r['instruction']}",
            f"- transcript: {_clip(r['text_raw'])}",
            f"- summary: {_clip(r['target'])}",
            "",
        ]
    if not rows:
        L.append("(no accepted rows)")
    atomic_write(md, "\n".join(L) + "\n")
    return md, png

"""`llm-usage-exporter prices show|explain`: the numbers a user checks an invoice against."""

from __future__ import annotations

from exporter.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["prices", *argv])
    return code, capsys.readouterr().out


def test_show_names_the_canonical_model_and_its_prices(capsys):
    code, out = run(capsys, "show", "gpt-4o-2024-08-06")
    assert code == 0
    assert "model=gpt-4o provider=openai source=genai-prices" in out
    assert "input           $2.5 / 1M tokens" in out and "service_tier=priority" in out


def test_show_refuses_a_different_model(capsys):
    code, out = run(capsys, "show", "gpt-4o-ultra")
    assert code == 1 and "no price" in out


def test_explain_prints_each_component_and_the_total(capsys):
    # claude-sonnet-4-5 above 200k input: $6 input, $7.5 5m writes, $12 1h writes, $0.6 reads, $22.5 output
    # 130,000 × 6 + 15,000 × 7.5 + 5,000 × 12 + 100,000 × 0.6 + 2,000 × 22.5 per M
    # = 0.78 + 0.1125 + 0.06 + 0.06 + 0.045 = $1.0575
    code, out = run(capsys, "explain", "claude-sonnet-4-5", "--input", "250000", "--output", "2000",
                    "--cache-read", "100000", "--cache-write", "20000", "--cache-write-1h", "5000",
                    "--at", "2026-11-20")
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.startswith("  ")}
    assert "130,000 x $6 / 1M tokens" in lines["input"] and "$0.78" in lines["input"]
    assert "15,000 x $7.5" in lines["cache_write"] and "5,000 x $12" in lines["cache_write_1h"]
    assert lines["total"].split()[-1] == "$1.0575"
    assert "long-context tier" in out


def test_explain_service_tier_and_fallback_warning(capsys):
    _, out = run(capsys, "explain", "gpt-5", "--input", "100000", "--output", "10000", "--service-tier", "flex",
                 "--at", "2026-11-20")
    assert "service_tier=flex" in out and out.splitlines()[-1].split()[-1] == "$0.1125"  # 0.0625 + 0.05
    _, out = run(capsys, "explain", "gpt-4o", "--input", "1000", "--service-tier", "flex", "--at", "2026-11-20")
    assert "warning: no 'flex' price" in out


def test_explain_rejects_impossible_counts(capsys):
    assert main(["prices", "explain", "gpt-4o", "--input", "10", "--cache-read", "11"]) == 2

# scripts/autobahn_cases.py: splits an Autobahn|Testsuite run into batches, and merges
# their reports back into one (for scripts/autobahn.sh, which runs the batches in
# parallel). Runs on the suite's own Python 2.7, so the case list and the reports are
# the suite's: its pattern matching, its case classes, its report writer.
#
#   python autobahn_cases.py split SPEC DIR BATCHES
#       Resolves SPEC's cases and exclude-cases as wstest would and writes
#       DIR/batch-K/spec.json (same server, explicit disjoint case lists, reports to
#       DIR/batch-K/reports), the costliest batch first. Prints the number of batches
#       and cases.
#   python autobahn_cases.py merge OUTDIR BATCHDIR...
#       Moves every batch's case reports into OUTDIR and writes the suite's
#       index.html and index.json over all of them. Prints the cases merged and the
#       case ids a batch was given but has no verdict for: those of a batch cut by the
#       bound (the one it was running, and those it had not started).
#
# The suite sends one message at a time and waits for its echo, so a case costs about
# what it sends: the compression cases (12.*, 13.*) 1,000 messages of up to 128 KiB
# each, chapter 9 up to 16 MiB in all, everything else a few frames.
from __future__ import print_function

import json
import os
import shutil
import sys

from autobahntestsuite.case import Cases, CaseBasename, CaseCategories, CaseSetname, CaseSubCategories
from autobahntestsuite.caseset import CaseSet
from autobahntestsuite.fuzzing import FuzzingFactory

CASE_SET = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)

# Seconds a case costs at least (a connection, a handshake, a close), and bytes a
# second the suite's side moves through zlib and its masking: rough, but it only
# has to keep the batches' sizes near each other.
BASE_SECONDS = 0.3
BYTES_PER_SECOND = 25e6


def cost(case_id):
    klass = CASE_SET.CasesById[case_id]
    sent = getattr(klass, "LEN", 0) * getattr(klass, "COUNT", 0)
    return BASE_SECONDS + sent / BYTES_PER_SECOND


def split(spec_path, out_dir, batches):
    with open(spec_path) as f:
        spec = json.load(f)
    case_ids = CASE_SET.parseSpecCases(spec)
    # Longest first onto the lightest batch: sizes end up close to each other.
    bins = [[0.0, []] for _ in range(max(1, min(batches, len(case_ids))))]
    for case_id in sorted(case_ids, key=cost, reverse=True):
        lightest = min(bins, key=lambda b: b[0])
        lightest[0] += cost(case_id)
        lightest[1].append(case_id)
    bins.sort(key=lambda b: b[0], reverse=True)
    for k, (_, ids) in enumerate(bins):
        batch_dir = os.path.join(out_dir, "batch-%d" % k)
        if not os.path.isdir(batch_dir):
            os.makedirs(batch_dir)
        batch_spec = dict(spec)
        batch_spec["outdir"] = os.path.join(batch_dir, "reports")
        batch_spec["cases"] = [CASE_SET.caseIdTupletoId(t) for t in sorted(CASE_SET.caseIdtoIdTuple(i) for i in ids)]
        batch_spec["exclude-cases"] = []
        with open(os.path.join(batch_dir, "spec.json"), "w") as f:
            json.dump(batch_spec, f, indent=2)
    print(len(bins), len(case_ids))


class Merged(FuzzingFactory):
    """The suite's report writer, fed the batches' results instead of running them."""

    def __init__(self, outdir):
        FuzzingFactory.__init__(self, outdir)
        self.CaseSet = CASE_SET


def interrupted(batch_dir):
    """The case a batch's wstest was running when it was stopped (by the bound), if it
    was: stopped, the suite still writes its reports, the unfinished case as FAILED
    ("did not finish"), which is not a verdict on the server."""
    try:
        with open(os.path.join(batch_dir, "status")) as f:
            if f.read().strip() == "0":
                return None
        with open(os.path.join(batch_dir, "wstest.log")) as f:
            started = [line.split()[4] for line in f if line.startswith("Running test case ID ")]
    except IOError:
        return None
    return started[-1] if started else None


def merge(out_dir, batch_dirs):
    merged = Merged(out_dir)
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    missing = []
    for batch_dir in batch_dirs:
        with open(os.path.join(batch_dir, "spec.json")) as f:
            wanted = json.load(f)["cases"]
        reports = os.path.join(batch_dir, "reports")
        index_path = os.path.join(reports, "index.json")
        index = {}
        if os.path.exists(index_path):
            with open(index_path) as f:
                index = json.load(f)
        cut = interrupted(batch_dir)
        done = set()
        for agent, cases in index.items():
            for case_id, entry in cases.items():
                if case_id == cut:
                    continue
                with open(os.path.join(reports, entry["reportfile"])) as f:
                    merged.logCase(json.load(f))
                for ext in ("json", "html"):
                    name = merged.makeAgentCaseReportFilename(agent, case_id, ext)
                    shutil.move(os.path.join(reports, name), os.path.join(out_dir, name))
                done.add(case_id)
        missing.extend(c for c in wanted if c not in done)
    merged.createMasterReportHTML(out_dir)
    merged.createMasterReportJSON(out_dir)
    print(sum(len(c) for c in merged.agents.values()), " ".join(missing))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "split":
        split(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "merge":
        merge(sys.argv[2], sys.argv[3:])
    else:
        sys.exit("usage: autobahn_cases.py split SPEC DIR BATCHES | merge OUTDIR BATCHDIR...")

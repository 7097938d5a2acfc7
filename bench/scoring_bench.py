"""VLM requests and wall time per MPC scoring step: N candidates x V views x M agents against an
OpenAI-compatible server on 127.0.0.1 that answers after a fixed latency (the loopback test
server, not a VLM). Compares twinloop's batching (one request per agent and view for each group
of up to 5 candidates, the distinct tube colours one image can carry) with one request per
candidate; agents run in parallel, each backend with concurrent requests.
Prints the table and writes bench/results/scoring.json.

    . ./twinloop_env.sh && python bench/scoring_bench.py [--latency 0.2] [--concurrency 4]
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from twinloop_scoring import vqa
from twinloop_scoring.loopback_server import ChatServer
from twinloop_scoring.openai_http import OpenAIHTTPBackend
from twinloop_twin import overlays

GRID = [(4, 2, 1), (16, 4, 1), (16, 4, 3)]


def answer(body):
    """A valid reply for whatever candidates the request's schema names."""
    ids = body['response_format']['json_schema']['schema']['properties']['candidates']['items']['properties']['id'][
        'enum'
    ]
    return json.dumps(
        {
            'view_clarity': 8,
            'candidates': [
                {
                    'id': c,
                    'safety': 7,
                    'task_alignment': 6,
                    'efficiency': 5,
                    'physical_feasibility': 8,
                    'viewpoint_clarity': 8,
                    'rationale': 'bench',
                }
                for c in ids
            ],
        }
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--latency', type=float, default=0.2, help='server latency per request [s]')
    parser.add_argument('--concurrency', type=int, default=4)
    args = parser.parse_args()
    root = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1]))
    config = vqa.PromptConfig.from_yaml(root / 'config' / 'vqa_prompts.yaml')
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    rows = []
    with ChatServer(latency=args.latency, responder=answer) as server:
        for n, v, m in GRID:
            ids = [f'c{i}' for i in range(n)]
            views = [vqa.View(f'view{k}', image, {c: 'colour' for c in ids}) for k in range(v)]
            row = {'candidates': n, 'views': v, 'agents': m}
            for mode in ('batched', 'per_candidate'):
                agents = [
                    vqa.Agent(
                        OpenAIHTTPBackend(server.url, 'bench', concurrency=args.concurrency, cache=False), 0.1 * i
                    )
                    for i in range(m)
                ]
                started = time.perf_counter()
                size = len(overlays.DISTINCT_NAMES) if mode == 'batched' else 1
                groups = [ids[i : i + size] for i in range(0, n, size)]
                requests = 0
                for group in groups:
                    result = vqa.score(
                        config,
                        'bench',
                        [vqa.View(x.name, x.image, {c: 'colour' for c in group}) for x in views],
                        group,
                        agents,
                    )
                    requests += result.requests
                row[f'{mode}_requests'] = requests
                row[f'{mode}_wall_s'] = round(time.perf_counter() - started, 2)
            rows.append(row)
            print(row, flush=True)
    report = {
        'benchmark': 'scoring requests per MPC step',
        'server_latency_s': args.latency,
        'concurrency': args.concurrency,
        'server': 'loopback chat-completions test server (not a VLM)',
        'rows': rows,
        'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
    }
    out = root / 'bench' / 'results' / 'scoring.json'
    out.write_text(json.dumps(report, indent=2) + '\n')
    print(f'wrote {out}')


if __name__ == '__main__':
    main()

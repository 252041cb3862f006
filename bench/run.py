"""Run the project's benchmarks on the real samples in ../shared/data, at full size.

    python bench/run.py                       # everything (the full measurement; takes a while)
    python bench/run.py --quick               # fewer repetitions and steps: checks that it works
    python bench/run.py --only training,inference

Benchmarks (one module each in bench/, each with run(work, quick) -> dict of numbers):
  conversion  create_pascal_tf_record.py on the 12 BraTS 2018 cases: patients/s, MB per patient
  training    Train.py's step rate on the real pipeline vs one constant batch; peak memory
  inference   Inference.py on the BRATS2015 patient vs the pure forward pass, on 2 cores
  own_scans   Inference.py --t1c --flair --t1 --t2 on clinical scans of a BraTS 2018 case: preparation, whole command

Prints the machine and one table (benchmark, metric, value, target, pass/FAIL), and writes
bench/results.json (bench/results-quick.json with --quick): machine facts, every measured
number, the table and a timestamp. A run of some benchmarks (--only) replaces theirs and keeps
the others', each with the machine and time it ran on. A full-measurement run also rewrites the
"performance" sections of README.md (the rows with a target) and docs/performance.md (every
row) from the file. Outputs go to a temporary folder, removed at
the end.
Exits 0 when every benchmark ran, even if a target is missed (the table says so), and 1 when
a benchmark could not run.
"""
import argparse
import datetime
import json
import os
import sys
import time
import traceback

from bench import common, conversion, inference, own_scans, training
from bench.common import ROOT, vector_level
from bench.sections import replace_sections

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = {'conversion': conversion, 'training': training, 'inference': inference, 'own_scans': own_scans}
README = os.path.join(ROOT, 'README.md')
PERFORMANCE = os.path.join(ROOT, 'docs', 'performance.md')
RESULTS = os.path.join(BENCH_DIR, 'results.json')   # the committed measurements the sections render
# Rows without a target that the README shows too (by the start of their metric), per benchmark.
README_ROWS = {'training': ('Train.py, real pipeline', 'Train.py --bfloat16 on, real pipeline', 'ratio --devices 2',
                            'ratio 2 workers'),
               'inference': ('same with --tta none',),
               'own_scans': ('preparation', 'same with --tta none')}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true',
                        help='fewer repetitions and steps, to check that everything runs')
    parser.add_argument('--only', default=','.join(BENCHMARKS),
                        help='comma-separated subset of: ' + ', '.join(BENCHMARKS))
    parser.add_argument('--data-dir', default=common.DATA_DIR,
                        help='folder holding brats2018_sample/ and brats2015_sample/')
    parser.add_argument('--output', default=None,
                        help='results JSON (default bench/results.json, or bench/results-quick.json '
                             'with --quick)')
    parser.add_argument('--render', action='store_true',
                        help='run nothing: rewrite the README and docs/performance.md sections from bench/results.json')
    parser.add_argument('--keep-work-dir', action='store_true',
                        help='keep the temporary work folder (logs of every child process)')
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(',') if name.strip()]
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown or not args.only:
        parser.error('--only: unknown benchmark {} (choose from {})'.format(
            ', '.join(unknown) or "''", ', '.join(BENCHMARKS)))
    args.only = [name for name in BENCHMARKS if name in args.only]   # always in pipeline order
    if args.output is None:
        args.output = os.path.join(BENCH_DIR, 'results-quick.json') if args.quick else RESULTS
    return args


def describe_machine(facts):
    memory = '{:.1f} GiB'.format(facts['memory_gib']) if facts['memory_gib'] else 'unknown'
    return '\n'.join([
        'machine : {} ({} logical cores, {} usable), {} RAM, load average {}'.format(
            facts['cpu_model'], facts['logical_cores'], facts['usable_cores'], memory,
            ' '.join('{:.2f}'.format(load) for load in facts['load_average_1_5_15'])),
        'software: Python {}, TensorFlow {}, NumPy {}, SimpleITK {} on {}'.format(
            facts['python'], facts['tensorflow'], facts['numpy'], facts['simpleitk'], facts['platform']),
    ])


def format_table(table):
    headers = ('benchmark', 'metric', 'value', 'target', 'result')
    lines = [(entry['benchmark'], entry['metric'], entry['text'], entry['target'], entry['status'])
             for entry in table]
    widths = [max(len(str(line[column])) for line in lines + [headers]) for column in range(5)]
    rule = '-+-'.join('-' * width for width in widths)
    render = lambda line: ' | '.join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()  # noqa: E731
    return '\n'.join([render(headers), rule] + [render(line) for line in lines])


def merged(document, path):
    """`document` with the benchmarks it did not run taken from the results file at `path`."""
    if not os.path.isfile(path):
        return document
    with open(path) as stream:
        previous = json.load(stream)
    kept = {name: dict({'machine': previous['machine'], 'timestamp': previous['timestamp']}, **result)
            for name, result in previous.get('benchmarks', {}).items() if name not in document['benchmarks']}
    benchmarks = dict(kept, **document['benchmarks'])
    ordered = [name for name in BENCHMARKS if name in benchmarks]
    return dict(document, benchmarks={name: benchmarks[name] for name in ordered},
                table=[dict(entry, benchmark=name) for name in ordered for entry in benchmarks[name].get('table', [])])


def table_section(document, entries, footer):
    """A Markdown table of benchmark `entries`, where each benchmark ran, and `footer`."""
    lines = ['| benchmark | metric | value | target | result |', '|---|---|---|---|---|']
    lines += ['| {benchmark} | {metric} | {text} | {target} | {status} |'.format(**entry) for entry in entries]
    lines += ['']
    for name, result in document['benchmarks'].items():
        facts = result.get('machine', document['machine'])
        lines.append('- {}: {} ({}), {} logical cores, TensorFlow {}, {}'.format(
            name, facts['cpu_model'], vector_level(facts.get('cpu_vector_extensions', [])),
            facts['logical_cores'], facts['tensorflow'], result.get('timestamp', document['timestamp'])))
    return '\n'.join(lines + ['', footer])


def in_readme(entry):
    """Whether a table row goes into the README: it has a target, or its metric starts with one of
    README_ROWS of its benchmark."""
    return bool(entry['target']) or any(entry['metric'].startswith(prefix)
                                        for prefix in README_ROWS.get(entry['benchmark'], ()))


def readme_section(document):
    """The README's performance section: the rows in_readme, and where each benchmark ran."""
    return table_section(document, [entry for entry in document['table'] if in_readme(entry)],
                         'The main rows; [docs/performance.md](docs/performance.md) has every measurement. '
                         'Rendered from [bench/results.json](bench/results.json) by `make bench` '
                         '(`python bench/run.py --only inference` reruns one benchmark).')


def full_section(document):
    """docs/performance.md's section: every row of the results document."""
    return table_section(document, document['table'], 'Rendered from [bench/results.json](../bench/results.json) '
                         'by `make bench`.')


def render_sections(document):
    """Rewrite the performance sections of README.md and docs/performance.md from `document`."""
    replace_sections(README, {'performance': readme_section(document)})
    replace_sections(PERFORMANCE, {'performance': full_section(document)})
    print('README.md and docs/performance.md performance sections rewritten')


def main(argv=None):
    args = parse_args(argv)
    if args.render:
        with open(RESULTS) as stream:
            render_sections(json.load(stream))
        return 0
    if not common.machine()['tensorflow']:
        print('bench/run.py: error: TensorFlow is not installed for {}; run it with the project '
              'venv (.venv/bin/python bench/run.py or make bench)'.format(sys.executable),
              file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    facts = common.machine()
    print(describe_machine(facts))
    print('running {} benchmark(s){}: {}'.format(len(args.only), ' in --quick mode' if args.quick else '',
                                                 ', '.join(args.only)), flush=True)
    try:
        work = common.Workspace(args.data_dir, keep=args.keep_work_dir)
    except common.BenchError as error:
        print('bench/run.py: error: {}'.format(error), file=sys.stderr)
        return 2
    results, table, failed = {}, [], []
    try:
        for name in args.only:
            print('[{}] {} ...'.format(time.strftime('%H:%M:%S'), name), flush=True)
            began = time.perf_counter()
            try:
                result = BENCHMARKS[name].run(work, quick=args.quick)
            except Exception as error:   # report it, go on with the next benchmark
                failed.append(name)
                details = str(error) if isinstance(error, common.BenchError) else traceback.format_exc()
                print('[{}] {} FAILED: {}'.format(time.strftime('%H:%M:%S'), name, details),
                      file=sys.stderr, flush=True)
                results[name] = {'error': details}
                table.append({'benchmark': name, 'metric': 'benchmark could not run', 'value': None,
                              'text': 'ERROR', 'target': '', 'status': 'ERROR'})
                continue
            result['benchmark_wall_s'] = time.perf_counter() - began
            result['machine'], result['timestamp'] = facts, started.isoformat(timespec='seconds')
            rows = BENCHMARKS[name].rows(result)
            result['table'] = rows
            results[name] = result
            table += [dict(entry, benchmark=name) for entry in rows]
            print('[{}] {} done in {:.0f} s'.format(time.strftime('%H:%M:%S'), name,
                                                     result['benchmark_wall_s']), flush=True)
        prepared = dict(work.prepared)
    finally:
        work.cleanup()
    print()
    print(format_table(table))
    missed = [entry for entry in table if entry['status'] == 'FAIL']
    print()
    print('{} target(s) met, {} missed{}{}'.format(
        sum(entry['status'] == 'pass' for entry in table), len(missed),
        ', {} benchmark(s) failed to run: {}'.format(len(failed), ', '.join(failed)) if failed else '',
        ' (--quick: few repetitions, not a measurement)' if args.quick else ''))
    document = {
        'timestamp': started.isoformat(timespec='seconds'),
        'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': [os.path.relpath(sys.argv[0], ROOT)] + (sys.argv[1:] if argv is None else list(argv)),
        'quick': args.quick,
        'machine': facts,
        'load_average_at_end': list(os.getloadavg()),
        'data_dir': os.path.abspath(args.data_dir),
        'prepared_untimed': prepared,
        'benchmarks': results,
        'table': table,
    }
    document = merged(document, args.output)
    common.write_json(args.output, document)
    print('results written to {}'.format(os.path.relpath(args.output)))
    if not args.quick and not failed and os.path.abspath(args.output) == RESULTS:
        render_sections(document)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

"""bench/run.py: merging partial runs and rendering the committed results."""


def test_a_partial_run_keeps_the_other_benchmarks_and_renders_their_machines(tmp_path):
    import json
    from bench import run
    old = {'machine': {'cpu_model': 'Old CPU', 'logical_cores': 2, 'tensorflow': '2.20'}, 'timestamp': 'then',
           'benchmarks': {name: {'table': [{'metric': name + ' rate', 'text': '1 x', 'target': '', 'status': ''}]}
                          for name in ('conversion', 'inference')}}
    path = tmp_path / 'results.json'
    path.write_text(json.dumps(old))
    new = {'machine': {'cpu_model': 'New CPU', 'logical_cores': 2, 'tensorflow': '2.21'}, 'timestamp': 'now',
           'benchmarks': {'inference': {'machine': {'cpu_model': 'New CPU', 'logical_cores': 2, 'tensorflow': '2.21'},
                                        'timestamp': 'now',
                                        'table': [{'metric': 's/volume', 'text': '5 s', 'target': '<= 10', 'status': 'pass'}]}},
           'table': []}
    document = run.merged(new, str(path))
    assert list(document['benchmarks']) == ['conversion', 'inference']
    assert [entry['metric'] for entry in document['table']] == ['conversion rate', 's/volume']
    section = run.readme_section(document)
    assert '| inference | s/volume | 5 s | <= 10 | pass |' in section and 'conversion rate' not in section
    assert '- conversion: Old CPU' in section and '- inference: New CPU' in section
    full = run.full_section(document)
    assert '| conversion | conversion rate | 1 x |  |  |' in full and '| inference | s/volume |' in full


def test_every_extra_readme_row_names_a_row_of_the_committed_results():
    import json
    import os
    from bench import run
    with open(os.path.join(run.BENCH_DIR, 'results.json')) as stream:
        table = json.load(stream)['table']
    for benchmark, prefixes in run.README_ROWS.items():
        for prefix in prefixes:
            assert [entry for entry in table if entry['benchmark'] == benchmark and entry['metric'].startswith(prefix)]

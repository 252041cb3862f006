"""Generated inputs for the parsers of list files and file names: they either succeed or fail
with the intended one-line InputError, never with another exception."""
import csv
import io
import os
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model import cli
from model.brats import LAYOUT_MHA, LAYOUT_NIFTI, DataError, Patient, find_patients, layout_of
from model.errors import InputError
from model.lists import COLUMNS, read_patient_list

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
NAME_PARTS = st.sampled_from(['VSD', 'Brain', 'Brain_3more', 'XX', 'O', 'MR_Flair', 'MR_T1', 'MR_T1c',
                              'MR_T2', 'OT', '35557', '7', '', 'mha', 'nii', 'gz', 'case', 'flair',
                              't1', 't1ce', 't2', 'seg', '_', '.'])
FILE_NAMES = st.one_of(
    st.lists(NAME_PARTS, min_size=1, max_size=9).map(lambda parts: '.'.join(parts)),
    st.lists(NAME_PARTS, min_size=1, max_size=6).map(lambda parts: '_'.join(parts) + '.nii.gz'),
    st.text(string.ascii_letters + string.digits + '._-', min_size=1, max_size=40))
FIELDS = st.one_of(st.text(max_size=20), st.sampled_from(['', 'missing.mha', ',', '"', '\n']))


@SETTINGS
@given(FILE_NAMES)
def test_layout_of_any_name(name):
    try:
        layout = layout_of(name)
    except DataError as error:
        assert name in str(error) and '\n' not in str(error)
    else:
        assert layout in (LAYOUT_MHA, LAYOUT_NIFTI)


@SETTINGS
@given(st.lists(FILE_NAMES, min_size=1, max_size=8, unique=True))
def test_find_patients_on_any_file_names(tmp_path_factory, names):
    root = tmp_path_factory.mktemp('names')
    for index, name in enumerate(names):
        folder = root / 'patient{}'.format(index % 3)
        folder.mkdir(exist_ok=True)
        if name not in ('', '.', '..'):
            (folder / name).write_bytes(b'')
    try:
        patients = find_patients([str(root)])
    except InputError as error:
        assert '\n' not in str(error)
    else:
        for patient in patients:
            assert all(os.path.exists(path) for path in patient.modality_paths)
            if patient.layout == LAYOUT_MHA:
                assert isinstance(patient.flair_id, int)


@SETTINGS
@given(st.lists(st.lists(FIELDS, min_size=0, max_size=8), max_size=6), st.booleans())
def test_read_patient_list_on_any_csv(tmp_path_factory, rows, with_header):
    folder = tmp_path_factory.mktemp('lists')
    existing = folder / 'Case_flair.nii.gz'
    existing.write_bytes(b'')
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator='\n')
    if with_header:
        writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([str(existing) if field == 'missing.mha' else field for field in row])
    path = folder / 'list.txt'
    path.write_text(stream.getvalue(), encoding='utf-8')
    try:
        patients = read_patient_list(str(path))
    except InputError as error:
        assert '\n' not in str(error).strip()
    else:
        assert all(isinstance(patient, Patient) for patient in patients)


@SETTINGS
@given(st.text(max_size=30))
def test_int_list_parses_or_refuses(text):
    try:
        values = cli.int_list(text)
    except Exception as error:   # argparse turns ArgumentTypeError into a usage error
        assert type(error).__name__ == 'ArgumentTypeError'
    else:
        assert all(isinstance(value, int) for value in values)

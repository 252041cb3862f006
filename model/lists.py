"""Patient list files: CSV with the header `patient,flair,t1,t1c,t2,label`.

readfile.py writes them; every later script reads them. The label column is empty for
unlabelled (test) patients. Paths are kept as given.
"""
import csv
import operator
import os
import random

from model.atomic import atomic_output
from model.brats import DataError, Patient, layout_of

COLUMNS = ('patient', 'flair', 't1', 't1c', 't2', 'label')


def write_patient_list(patients, path):
    """Write patients to a list file atomically."""
    with atomic_output(path) as temporary:
        with open(temporary, 'w', newline='', encoding='utf-8') as stream:
            writer = csv.writer(stream, lineterminator='\n')
            writer.writerow(COLUMNS)
            for patient in patients:
                writer.writerow([patient.name, patient.flair, patient.t1, patient.t1c, patient.t2,
                                 patient.label or ''])


def read_patient_list(path, require_labels=False):
    """Read a list file back into Patients.

    Args:
      path: the CSV list.
      require_labels: refuse a patient whose label column is empty.
    Returns:
      A list of Patient in file order.
    Raises:
      DataError: missing file, wrong header, a row with the wrong number of fields, an empty
        or duplicated patient, a path that does not exist, or files of mixed layouts.
    """
    if not os.path.isfile(path):
        raise DataError('{}: list file does not exist'.format(path))
    try:
        with open(path, newline='', encoding='utf-8') as stream:
            rows = list(csv.reader(stream))
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError('{}: not a readable CSV list ({})'.format(path, error)) from None
    if not rows or tuple(field.strip() for field in rows[0]) != COLUMNS:
        raise DataError('{}: header must be {}'.format(path, ','.join(COLUMNS)))
    patients, seen = [], set()
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(field.strip() for field in row):
            continue
        patient = _parse_row(row, '{}:{}'.format(path, line_number), require_labels)
        if patient.name in seen:
            raise DataError('{}:{}: duplicate patient {}'.format(path, line_number, patient.name))
        seen.add(patient.name)
        patients.append(patient)
    if not patients:
        raise DataError('{}: list holds no patient'.format(path))
    return patients


def _parse_row(row, where, require_labels):
    if len(row) != len(COLUMNS):
        raise DataError('{}: expected {} fields ({}), found {}'.format(
            where, len(COLUMNS), ','.join(COLUMNS), len(row)))
    if any('\n' in field or '\r' in field for field in row):
        raise DataError('{}: a field holds a line break'.format(where))
    fields = dict(zip(COLUMNS, (field.strip() for field in row)))
    if not fields['patient']:
        raise DataError('{}: empty patient name'.format(where))
    if require_labels and not fields['label']:
        raise DataError('{}: patient {} has no label file'.format(where, fields['patient']))
    for column in COLUMNS[1:]:
        if column == 'label' and not fields[column]:
            continue
        if not fields[column]:
            raise DataError('{}: patient {} has no {} path'.format(where, fields['patient'], column))
        if not os.path.isfile(fields[column]):
            raise DataError('{}: {} file does not exist: {}'.format(where, column, fields[column]))
    layouts = {layout_of(fields[column]) for column in COLUMNS[1:] if fields[column]}
    if len(layouts) != 1:
        raise DataError('{}: patient {} mixes .mha and NIfTI files'.format(where, fields['patient']))
    return Patient(name=fields['patient'], layout=layouts.pop(), flair=fields['flair'],
                   t1=fields['t1'], t1c=fields['t1c'], t2=fields['t2'], label=fields['label'] or None)


def split_validation(patients, fraction, seed):
    """Seeded patient-level split, stratified by grade (unknown grade is its own stratum).

    Each stratum gives round(fraction * size) patients to validation, at least one when the
    fraction is positive and the stratum has two or more patients.
    Returns (train, validation), both sorted by name.
    """
    if not 0 <= fraction < 1:
        raise DataError('validation fraction must be in [0, 1), got {}'.format(fraction))
    rng = random.Random(seed)
    train, validation = [], []
    strata = sorted({patient.grade or '' for patient in patients})
    for stratum in strata:
        members = sorted((p for p in patients if (p.grade or '') == stratum), key=lambda p: p.name)
        rng.shuffle(members)
        count = round(fraction * len(members))
        if fraction > 0 and count == 0 and len(members) >= 2:
            count = 1
        validation.extend(members[:count])
        train.extend(members[count:])
    by_name = operator.attrgetter('name')
    return sorted(train, key=by_name), sorted(validation, key=by_name)

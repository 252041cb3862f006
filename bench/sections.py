"""Generated sections of Markdown documents (README.md, docs/): the text between a section's start
and end comments is rewritten by the command that measures it (bench/run.py, experiments/)."""
from model.atomic import atomic_output
from model.errors import InputError


def markers(section):
    """The start and end comments that delimit a generated section."""
    return '<!-- {}: start -->'.format(section), '<!-- {}: end -->'.format(section)


def replace_sections(document, rendered):
    """Replace the text between the markers of each section of `document` with rendered[section];
    nothing is written unless every section's markers are there, in order."""
    with open(document, encoding='utf-8') as stream:
        text = stream.read()
    for section, body in rendered.items():
        start, end = markers(section)
        if start not in text or end not in text.split(start, 1)[1]:
            raise InputError('{}: table markers {} ... {} are missing or out of order'.format(document, start, end))
        before, rest = text.split(start, 1)
        text = before + start + '\n' + body + '\n' + end + rest.split(end, 1)[1]
    with atomic_output(document) as temporary:
        with open(temporary, 'w', encoding='utf-8') as stream:
            stream.write(text)

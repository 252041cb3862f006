"""Figures: label overlays on FLAIR, the paper-style example, and the architecture diagram."""
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from model.atomic import atomic_output  # noqa: E402

LABEL_NAMES = ('background', 'necrosis', 'oedema', 'non-enhancing', 'enhancing')
LABEL_COLOURS = ((0, 0, 0, 0), (0.9, 0.1, 0.1, 0.6), (0.2, 0.8, 0.2, 0.5),
                 (0.2, 0.4, 1.0, 0.6), (1.0, 0.9, 0.1, 0.7))
_LABEL_MAP = ListedColormap(LABEL_COLOURS)


def _show(axis, flair, labels=None, title=None):
    axis.imshow(flair, cmap='gray', origin='upper', interpolation='nearest')
    if labels is not None:
        axis.imshow(labels, cmap=_LABEL_MAP, vmin=0, vmax=len(LABEL_COLOURS) - 1,
                    interpolation='nearest')
    axis.set_axis_off()
    if title:
        axis.set_title(title, fontsize=9)


def _legend(figure):
    handles = [Patch(color=colour, label=name)
               for name, colour in zip(LABEL_NAMES[1:], LABEL_COLOURS[1:])]
    figure.legend(handles=handles, loc='lower center', ncol=4, fontsize=8, frameon=False)


def _save(figure, path):
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=100, format='png')
    plt.close(figure)


def tumour_slices(labels, count):
    """Up to `count` axial slice indices spread evenly over the slices that hold tumour."""
    slices = np.flatnonzero(labels.any(axis=(1, 2)))
    if len(slices) <= count:
        return slices
    return slices[np.linspace(0, len(slices) - 1, count).round().astype(int)]


def save_overlay_montage(flair, labels, path, count=12, columns=4):
    """PNG montage of FLAIR slices with coloured labels, on slices that hold tumour.

    Args:
      flair: (z, y, x) FLAIR volume.
      labels: (z, y, x) label volume (0-4).
      path: output PNG.
    """
    slices = tumour_slices(labels, count)
    if len(slices) == 0:
        slices = [flair.shape[0] // 2]
    rows = -(-len(slices) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows + 0.4), squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    for axis, index in zip(axes.ravel(), slices):
        _show(axis, flair[index], labels[index], 'slice {}'.format(index))
    _legend(figure)
    _save(figure, path)


def save_sequences_montage(backgrounds, labels, path, count=6):
    """PNG of up to `count` tumour slices (rows), each shown with coloured labels on every
    background volume (columns).

    Args:
      backgrounds: {title: (z, y, x) volume}, e.g. T1c and FLAIR.
      labels: (z, y, x) label volume (0-4) on the same grid.
      path: output PNG.
    """
    slices = tumour_slices(labels, count)
    if len(slices) == 0:
        slices = [labels.shape[0] // 2]
    figure, axes = plt.subplots(len(slices), len(backgrounds), squeeze=False,
                                figsize=(2.6 * len(backgrounds), 2.6 * len(slices) + 0.4))
    for row, index in zip(axes, slices):
        for axis, (title, volume) in zip(row, backgrounds.items()):
            _show(axis, volume[index], labels[index], '{} slice {}'.format(title, index))
    _legend(figure)
    _save(figure, path)


def save_example(flair, prediction, truth, path, title=''):
    """The paper-style figure: FLAIR | prediction | ground truth on the slice with most tumour."""
    index = int(np.argmax((truth > 0).sum(axis=(1, 2))))
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.5))
    _show(axes[0], flair[index], title='FLAIR (slice {})'.format(index))
    _show(axes[1], flair[index], prediction[index], 'prediction')
    _show(axes[2], flair[index], truth[index], 'ground truth')
    if title:
        figure.suptitle(title, fontsize=10)
    _legend(figure)
    _save(figure, path)


def save_pipeline(shapes, path, title='DCR network'):
    """Architecture diagram from (name, (height, width), channels) tuples of the built graph.

    Encoder stages run down the left column, their DCR refine branches in the middle and the
    decoder up the right column; arrows show the data flow and the skip additions.
    """
    by_name = {name: (size, channels) for name, size, channels in shapes}
    encoder = [name for name, _, _ in shapes if name == 'images' or name.startswith(('input_conv', 'resnet'))]
    refine = [name for name, _, _ in shapes if name.startswith('refine')]
    decoder = [name for name, _, _ in shapes if name.startswith('decoder')]
    top = len(encoder) - 1
    row_of_size = {by_name[name][0]: top - index for index, name in enumerate(encoder)}
    positions = {name: (1.5, row_of_size[by_name[name][0]]) for name in encoder}
    positions.update({name: (5.0, row_of_size[by_name[name][0]]) for name in refine})
    positions.update({name: (8.3, row_of_size[by_name[name][0]]) for name in decoder})
    positions['logits'] = (10.3, row_of_size[by_name['logits'][0]])
    figure, axis = plt.subplots(figsize=(11.5, 7))
    axis.set_xlim(0, 11.5)
    axis.set_ylim(-0.7, top + 0.7)
    axis.set_axis_off()
    colours = dict.fromkeys(encoder, '#cfe2f3')
    colours.update(dict.fromkeys(refine, '#fce5cd'))
    colours.update(dict.fromkeys(decoder + ['logits'], '#d9ead3'))
    for name, (x, y) in positions.items():
        size, channels = by_name[name]
        axis.text(x, y, '{}\n{}x{}x{}'.format(name, size[0], size[1], channels), ha='center',
                  va='center', fontsize=8, bbox=dict(boxstyle='round', facecolor=colours[name]))
    chain = list(zip(encoder, encoder[1:])) + list(zip(decoder, decoder[1:] + ['logits']))
    for name in refine:
        chain.append(('resnet_' + name.split('_')[1], name))
        same_size = [d for d in decoder if by_name[d][0] == by_name[name][0]]
        chain.append((name, same_size[0] if same_size else decoder[0]))
    for first, second in chain:
        _arrow(axis, positions[first], positions[second])
    axis.set_title(title)
    _save(figure, path)


def _arrow(axis, start, end):
    axis.annotate('', xy=end, xytext=start,
                  arrowprops=dict(arrowstyle='->', color='#555555', shrinkA=18, shrinkB=18))


def draw_architecture(path, config=None, size=224):
    """Write image/pipeline.png for a NetworkConfig (default: the paper's DCR-A network)."""
    from model.dcr import NetworkConfig, stage_shapes
    config = config or NetworkConfig()
    title = 'DCR-{} network, dilations {}, width x{:g} ({}x{} input)'.format(
        config.dcr_type, ','.join(map(str, config.dilations)), config.width, size, size)
    save_pipeline(stage_shapes(config, size, size), path, title=title)


if __name__ == '__main__':
    import sys
    from model import cli
    cli.graph_mode()
    draw_architecture(sys.argv[1] if len(sys.argv) > 1 else 'image/pipeline.png')


def save_threshold_curve(thresholds, curves, argmax, path):
    """PNG of whole-tumour Dice, PPV and sensitivity against the tumour threshold of region decoding.

    Args:
      thresholds: the tumour thresholds, increasing.
      curves: {'WT_dice' | 'WT_ppv' | 'WT_sensitivity': values at each threshold}.
      argmax: {the same keys: the value under argmax decoding}, drawn as dotted lines.
      path: output PNG.
    """
    figure, axis = plt.subplots(figsize=(6, 4))
    for (metric, values), colour in zip(curves.items(), ('tab:blue', 'tab:orange', 'tab:green')):
        name = metric.replace('WT_', 'WT ').replace('dice', 'Dice').replace('ppv', 'PPV')
        axis.plot(thresholds, values, marker='o', color=colour, label=name)
        axis.axhline(argmax[metric], color=colour, linestyle=':', linewidth=1)
    axis.plot([], [], color='grey', linestyle=':', label='argmax decoding')
    axis.set_xlabel('tumour threshold: tumour where P(WT) exceeds it')
    axis.set_ylabel('mean over held-out patients')
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc='lower center')
    figure.tight_layout()
    _save(figure, path)


def save_grouped_bars(groups, series, means, errors, path, ylabel):
    """PNG of one group of bars per entry of `groups`, one bar per entry of `series`, with error bars.

    Args:
      groups, series: the names along the x axis and in the legend.
      means, errors: [group][series] bar heights and half-heights of their error bars.
      path: output PNG.
      ylabel: the y axis's title.
    """
    figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(groups) + 2), 4))
    width = 0.8 / len(series)
    for index, name in enumerate(series):
        positions = [group + (index - (len(series) - 1) / 2) * width for group in range(len(groups))]
        axis.bar(positions, [row[index] for row in means], width, yerr=[row[index] for row in errors],
                 capsize=3, label=name)
    axis.set_xticks(range(len(groups)))
    axis.set_xticklabels(groups, rotation=20, ha='right')
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 1)
    axis.grid(axis='y', alpha=0.3)
    axis.legend(fontsize=8, loc='lower right')
    figure.tight_layout()
    _save(figure, path)

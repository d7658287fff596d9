"""histodetect: lesion detection in whole-slide images as tile classification.

One subpackage per stage of the workflow, in the order the data flows; a stage imports only
the stages before it and the shared top-level modules (``errors``, ``io``, ``columns``,
``runner``): ``slides`` -> ``annotations`` -> ``cohort`` -> ``training`` -> ``features`` ->
``mil`` -> ``detection`` -> ``evaluation``.
"""

__version__ = "0.1.0"

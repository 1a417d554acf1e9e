"""The reporting checklists the model card walks, as data: TRIPOD+AI (Collins et al., BMJ 2024;
27 items, some in parts) and a selection of CLAIM 2024's 44 items (Tejani et al., "Checklist
for Artificial Intelligence in Medical Imaging (CLAIM): 2024 Update", Radiology: Artificial
Intelligence 2024;6(4):e240300, doi:10.1148/ryai.240300; the list at pubs.rsna.org/page/ai/claim):
those TRIPOD+AI does not ask in the same words (study design, de-identification, acquisition,
reference standard annotation, partitions, software, initialisation, training, selection,
ensembling, robustness, explainability, external testing, failures), each under its CLAIM 2024
number and name (`CLAIM_SELECTED`), so that a reader can trace it to the published list.

Each item says how it is answered (`study.conclude.checklist` does it, the card renders it):
- `rule`: the name of an answer drawn from the study's own records (study.json, the trial's
  row, summary.json); when those records lack it, the item falls back to `authors`;
- `not_applicable`: why the item does not apply to a study of this harness;
- `authors`: what the study's authors must state (the harness cannot know it).
"""

from __future__ import annotations

from dataclasses import dataclass

TRIPOD = "TRIPOD+AI"
CLAIM = "CLAIM 2024"
CLAIM_ITEMS = 44  # the items of the CLAIM 2024 checklist; the card answers a selection


@dataclass(frozen=True)
class Item:
    code: str  # TRIPOD+AI's item number ("10", "12c"); CLAIM 2024's as "CLAIM 33"
    source: str  # TRIPOD or CLAIM
    topic: str  # what the checklist asks, in short
    rule: str | None = None
    not_applicable: str | None = None
    authors: str | None = None


def _a(code: str, topic: str, what: str) -> Item:
    return Item(code, TRIPOD, topic, authors=what)


# fmt: off
ITEMS: tuple[Item, ...] = (
    Item("1", TRIPOD, "Title: development or evaluation, population, outcome", rule="title"),
    Item("2", TRIPOD, "Abstract (TRIPOD+AI for Abstracts)", rule="abstract",
         authors="the paper's abstract"),
    _a("3a", "Background: healthcare context, rationale, existing models",
       "the clinical context and the models this one is set against"),
    _a("3b", "Target population, intended purpose and users in the care pathway",
       "where in the care pathway the model would sit, for whom and used by whom; this card "
       "states only that it is a research model"),
    _a("3c", "Known health inequalities between sociodemographic groups",
       "known inequalities in DR screening for the population of the data"),
    Item("4", TRIPOD, "Objectives: development and/or validation", rule="objectives"),
    Item("5a", TRIPOD, "Data sources for development and evaluation; representativeness",
         rule="data_source"),
    _a("5b", "Dates of the participant data", "the dates the photographs were taken"),
    _a("6a", "Setting: primary/secondary care, number and location of centres",
       "the setting and centres the photographs come from"),
    _a("6b", "Eligibility criteria of participants",
       "who was photographed and why; the harness only drops images it cannot decode"),
    Item("6c", TRIPOD, "Treatments received and how they were handled",
         not_applicable="the model grades one photograph as taken; no treatment enters it"),
    Item("7", TRIPOD, "Data preparation: pre-processing and quality checks", rule="preparation"),
    Item("8a", TRIPOD, "Outcome: definition, how and when assessed", rule="outcome"),
    _a("8b", "Qualifications and demographics of the outcome assessors",
       "who graded the photographs (the labels) and their qualifications"),
    _a("8c", "Blinding of the outcome assessment", "whether graders saw other information"),
    Item("9a", TRIPOD, "Choice of initial predictors and any pre-selection", rule="predictors"),
    Item("9b", TRIPOD, "Definition of predictors, how and when measured", rule="predictor_input"),
    Item("9c", TRIPOD, "Qualifications of predictor assessors",
         not_applicable="the predictors are the photograph's pixels; nobody interprets them"),
    Item("10", TRIPOD, "Sample size: how arrived at, sufficiency", rule="sample_size"),
    Item("11", TRIPOD, "Missing data: how handled, reasons for omissions", rule="missing"),
    Item("12a", TRIPOD, "How the data were used: partitions", rule="partitions"),
    Item("12b", TRIPOD, "Handling of predictors (rescaling, standardisation)",
         rule="predictor_input"),
    Item("12c", TRIPOD, "Type of model, building steps, hyperparameter tuning, internal "
         "validation", rule="model_building"),
    Item("12d", TRIPOD, "Heterogeneity across clusters (e.g. hospitals)",
         not_applicable="the study's records hold no centre or other cluster of images"),
    Item("12e", TRIPOD, "Performance measures and plots, comparison of models",
         rule="measures"),
    Item("12f", TRIPOD, "Model updating (e.g. recalibration)", rule="updating_method"),
    Item("12g", TRIPOD, "How predictions are calculated (code, object, API)",
         rule="how_to_predict"),
    Item("13", TRIPOD, "Class imbalance methods", rule="class_imbalance"),
    _a("14", "Fairness approaches and their rationale",
       "any fairness analysis: the study's data carry no sociodemographic variables"),
    Item("15", TRIPOD, "Model output; classification thresholds and how chosen", rule="output"),
    Item("16", TRIPOD, "Differences between development and evaluation data",
         rule="train_vs_test"),
    _a("17", "Ethics approval and consent", "the ethics committee and consent or waiver"),
    _a("18a", "Funding", "the funding and the funders' role"),
    _a("18b", "Conflicts of interest", "the authors' conflicts of interest"),
    _a("18c", "Protocol", "where the protocol is, or that there was none"),
    _a("18d", "Registration", "the registration, or that the study was not registered"),
    _a("18e", "Data sharing", "where the images and labels can be obtained (the card records "
       "the folder and its content hash only)"),
    Item("18f", TRIPOD, "Code sharing", rule="code"),
    _a("19", "Patient and public involvement", "any patient and public involvement, or none"),
    Item("20a", TRIPOD, "Flow of participants; numbers with and without the outcome",
         rule="flow"),
    Item("20b", TRIPOD, "Characteristics per data source: sample size, events, missing data",
         rule="characteristics"),
    Item("20c", TRIPOD, "Evaluation vs development: distribution of predictors and outcome",
         rule="distributions"),
    Item("21", TRIPOD, "Participants and outcome events in each analysis", rule="flow"),
    Item("22", TRIPOD, "Full model specification, access and restrictions", rule="specification"),
    Item("23a", TRIPOD, "Performance with confidence intervals, key subgroups",
         rule="performance"),
    Item("23b", TRIPOD, "Heterogeneity of performance across clusters",
         not_applicable="the study's records hold no centre or other cluster of images"),
    Item("24", TRIPOD, "Results of model updating", rule="updating_result"),
    _a("25", "Interpretation, including fairness, against previous studies",
       "the interpretation of these results against previous studies"),
    Item("26", TRIPOD, "Limitations: sample, size, overfitting, missing data", rule="limitations"),
    Item("27a", TRIPOD, "Handling of poor-quality or unavailable input data", rule="bad_input"),
    _a("27b", "User interaction and the expertise required",
       "who would operate the model and with what expertise"),
    _a("27c", "Next steps: applicability and generalisability",
       "the next steps, e.g. an external test on another population"),
    # CLAIM 2024, where it asks what TRIPOD+AI does not: numbered and named as its 44-item
    # checklist (section "Methods" unless said), so that a reader can find each one there
    Item("CLAIM 5", CLAIM, "Prospective or retrospective study (study design)",
         rule="study_design"),
    Item("CLAIM 11", CLAIM, "De-identification methods", authors="how the images were "
         "de-identified"),
    Item("CLAIM 13", CLAIM, "Image acquisition protocol",
         authors="the cameras, fields and protocol of the photographs"),
    Item("CLAIM 16", CLAIM, "Source of reference standard annotations",
         authors="who assigned the grades (the labels), how many graders, and their "
         "qualifications and preparation"),
    Item("CLAIM 17", CLAIM, "Annotation of test set",
         authors="how the test images' grades were assigned (instructions, software, whether "
         "as for the training images)"),
    Item("CLAIM 18", CLAIM, "Measures of inter- and intra-rater variability of features "
         "described by the annotators",
         authors="the graders' agreement, and how disagreements were resolved"),
    Item("CLAIM 20", CLAIM, "Level at which partitions are disjoint", rule="partitions"),
    Item("CLAIM 23", CLAIM, "Software libraries, frameworks, and packages", rule="software"),
    Item("CLAIM 24", CLAIM, "Initialization of model parameters", rule="initialisation"),
    Item("CLAIM 25", CLAIM, "Details of training approach", rule="training"),
    Item("CLAIM 26", CLAIM, "Method of selecting the final model", rule="selection"),
    Item("CLAIM 27", CLAIM, "Ensembling techniques", not_applicable="one model, no ensemble"),
    Item("CLAIM 30", CLAIM, "Robustness or sensitivity analysis", rule="robustness",
         authors="a robustness analysis: this study retrained no configuration with new seeds"),
    Item("CLAIM 31", CLAIM, "Methods for explainability or interpretability",
         rule="explainability"),
    Item("CLAIM 33", CLAIM, "Testing on external data", rule="external_testing", authors="a test on data from another "
         "source (`python -m retina.predict --model best/ DATASET` prints its agreement)"),
    Item("CLAIM 39", CLAIM, "Failure analysis of incorrect results (Results)",
         rule="failures"),
)
# fmt: on

CLAIM_SELECTED = tuple(int(i.code.split()[1]) for i in ITEMS if i.source == CLAIM)

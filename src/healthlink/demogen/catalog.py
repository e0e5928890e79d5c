"""Codes the clinical generator draws from: LOINC laboratory tests with UCUM units and
adult reference ranges (ranges as printed by Chinese hospital laboratories), imaging
studies, ICD-10 diagnoses and their RxNorm drugs (ingredient RxCUIs).  Some drugs of one
condition interact with another's — warfarin with aspirin, ibuprofen or fluconazole;
simvastatin with clarithromycin; clopidogrel with omeprazole; lisinopril with
spironolactone; digoxin with amiodarone — as they do in real prescribing."""

from __future__ import annotations

# panel code (LOINC, or "HL-…" in our local code system where LOINC has no such panel), name, [(LOINC, display, UCUM unit, low, high)]; None = no bound
PANELS = (
    ("58410-2", "CBC panel - Blood by Automated count", (
        ("6690-2", "Leukocytes [#/volume] in Blood", "10*9/L", 3.5, 9.5),
        ("789-8", "Erythrocytes [#/volume] in Blood", "10*12/L", 4.3, 5.8),
        ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/L", 130, 175),
        ("4544-3", "Hematocrit [Volume Fraction] of Blood", "%", 40, 50),
        ("777-3", "Platelets [#/volume] in Blood", "10*9/L", 125, 350))),
    ("24325-3", "Hepatic function panel", (
        ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 9, 50),
        ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 15, 40),
        ("14631-6", "Bilirubin.total [Moles/volume] in Serum or Plasma", "umol/L", 3.4, 20.5),
        ("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/L", 40, 55))),
    ("24362-6", "Renal function panel", (
        ("14682-9", "Creatinine [Moles/volume] in Serum or Plasma", "umol/L", 57, 111),
        ("22664-7", "Urea [Moles/volume] in Serum or Plasma", "mmol/L", 3.1, 8.0),
        ("14933-6", "Urate [Moles/volume] in Serum or Plasma", "umol/L", 208, 428))),
    ("24326-1", "Electrolytes 1998 panel - Serum or Plasma", (
        ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 137, 147),
        ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.3),
        ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 99, 110))),
    ("HL-GLU", "Glucose and glycated hemoglobin", (
        ("14771-0", "Fasting glucose [Moles/volume] in Serum or Plasma", "mmol/L", 3.9, 6.1),
        ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 6.0))),
    ("57698-3", "Lipid panel with direct LDL - Serum or Plasma", (
        ("14647-2", "Cholesterol [Moles/volume] in Serum or Plasma", "mmol/L", None, 5.2),
        ("14927-8", "Triglyceride [Moles/volume] in Serum or Plasma", "mmol/L", None, 1.7),
        ("22748-8", "Cholesterol in LDL [Moles/volume] in Serum or Plasma", "mmol/L", None, 3.4),
        ("14646-4", "Cholesterol in HDL [Moles/volume] in Serum or Plasma", "mmol/L", 1.0, None))),
    ("HL-COAG", "Coagulation studies panel", (
        ("5902-2", "Prothrombin time (PT)", "s", 11, 14),
        ("6301-6", "INR in Platelet poor plasma by Coagulation assay", "{INR}", 0.8, 1.2),
        ("3173-2", "aPTT in Blood by Coagulation assay", "s", 25, 35),
        ("3255-7", "Fibrinogen [Mass/volume] in Platelet poor plasma by Coagulation assay", "g/L", 2.0, 4.0))),
    ("HL-TUMOR", "Tumor markers panel", (
        ("1834-1", "Alpha-1-Fetoprotein [Mass/volume] in Serum or Plasma", "ng/mL", None, 7.0),
        ("2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma", "ng/mL", None, 5.0),
        ("24108-3", "Cancer Ag 19-9 [Units/volume] in Serum or Plasma", "[U]/mL", None, 37))),
    ("HL-THYROID", "Thyroid function panel", (
        ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 0.27, 4.2),
        ("14920-3", "Thyroxine (T4) free [Moles/volume] in Serum or Plasma", "pmol/L", 12, 22),
        ("14928-6", "Triiodothyronine (T3) free [Moles/volume] in Serum or Plasma", "pmol/L", 3.1, 6.8))),
)
PANEL_WEIGHTS = (30, 15, 15, 10, 10, 8, 5, 3, 4)

# LOINC, display, SNOMED body site, site display, (normal conclusion, abnormal conclusion)
IMAGING = (
    ("24627-2", "CT Chest", "51185008", "Thoracic structure", ("双肺未见明显异常", "右肺下叶少许炎症")),
    ("24590-2", "MR Brain", "12738006", "Brain structure", ("颅脑MRI平扫未见异常", "双侧基底节区腔隙性脑梗死")),
    ("36643-5", "XR Chest 2 Views", "51185008", "Thoracic structure", ("心肺膈未见异常", "双肺纹理增粗")),
    ("24558-9", "US Abdomen", "10200004", "Liver structure", ("肝胆胰脾未见异常", "肝内囊性占位，考虑肝包虫病")),
    ("37637-3", "XR Knee", "72696002", "Knee region structure", ("膝关节未见异常", "膝关节退行性变")),
)

# ICD-10 code, display, RxNorm drugs: (RxCUI, name, dose, UCUM unit, route, timing)
ORAL, IV, SC, INH = ("26643006", "Oral route"), ("47625008", "Intravenous route"), \
    ("34206005", "Subcutaneous route"), ("447694001", "Respiratory tract route")
CHRONIC = (
    ("I10", "Essential (primary) hypertension", (("17767", "amlodipine", 5, "mg", ORAL, "QD"),
                                                 ("29046", "lisinopril", 10, "mg", ORAL, "QD"),
                                                 ("9997", "spironolactone", 20, "mg", ORAL, "QD"))),
    ("E11.9", "Type 2 diabetes mellitus without complications", (("6809", "metformin", 500, "mg", ORAL, "BID"),
                                                                  ("274783", "insulin glargine", 10, "[IU]", SC, "QD"))),
    ("E78.5", "Hyperlipidaemia, unspecified", (("83367", "atorvastatin", 20, "mg", ORAL, "QD"),
                                               ("36567", "simvastatin", 20, "mg", ORAL, "QD"))),
    ("I48.9", "Atrial fibrillation and atrial flutter, unspecified", (("11289", "warfarin", 3, "mg", ORAL, "QD"),
                                                                      ("3407", "digoxin", 0.125, "mg", ORAL, "QD"),
                                                                      ("703", "amiodarone", 200, "mg", ORAL, "QD"))),
    ("I25.1", "Atherosclerotic heart disease", (("1191", "aspirin", 100, "mg", ORAL, "QD"),
                                               ("32968", "clopidogrel", 75, "mg", ORAL, "QD"),
                                               ("6918", "metoprolol", 25, "mg", ORAL, "BID"))),
    ("D75.1", "Secondary polycythaemia", (("1191", "aspirin", 100, "mg", ORAL, "QD"),)),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified", (("435", "albuterol", 100, "ug", INH, "QID"),)),
    ("B67.0", "Echinococcus granulosus infection of liver", (("430", "albendazole", 400, "mg", ORAL, "BID"),)),
    ("K29.5", "Chronic gastritis, unspecified", (("7646", "omeprazole", 20, "mg", ORAL, "QD"),)),
    ("E03.9", "Hypothyroidism, unspecified", (("10582", "levothyroxine", 50, "ug", ORAL, "QD"),)),
)
CHRONIC_WEIGHTS = (30, 10, 10, 4, 8, 8, 6, 5, 12, 4)
ACUTE = (
    ("J06.9", "Acute upper respiratory infection, unspecified", (("161", "acetaminophen", 500, "mg", ORAL, "TID"),
                                                                 ("5640", "ibuprofen", 400, "mg", ORAL, "TID"))),
    ("J18.9", "Pneumonia, unspecified", (("723", "amoxicillin", 500, "mg", ORAL, "TID"),
                                         ("21212", "clarithromycin", 500, "mg", ORAL, "BID"),
                                         ("2194", "cefuroxime", 1500, "mg", IV, "BID"))),
    ("A09", "Gastroenteritis and colitis of unspecified origin", (("2551", "ciprofloxacin", 500, "mg", ORAL, "BID"),)),
    ("N39.0", "Urinary tract infection, site not specified", (("2551", "ciprofloxacin", 500, "mg", ORAL, "BID"),)),
    ("M54.5", "Low back pain", (("5640", "ibuprofen", 400, "mg", ORAL, "TID"),)),
    ("B37.3", "Candidiasis of vulva and vagina", (("4450", "fluconazole", 150, "mg", ORAL, "QD"),)),
    ("T78.4", "Allergy, unspecified", (("8640", "prednisone", 10, "mg", ORAL, "QD"),)),
)
ACUTE_WEIGHTS = (40, 12, 15, 8, 15, 5, 5)
ALLERGENS = (("70618", "penicillin", "medication"), ("10180", "sulfamethoxazole", "medication"),
             ("1191", "aspirin", "medication"), ("2194", "cefuroxime", "medication"))
REACTIONS = (("271807003", "Eruption of skin"), ("39579001", "Anaphylaxis"), ("126485001", "Urticaria"))

"""The FHIR R4 read interface for regional systems (``/fhir/R4``): ``resources`` maps our
rows to FHIR resources, ``search`` reads search parameters, ``service`` reads with the
API's access rules and audits, ``views`` routes."""

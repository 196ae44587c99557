"""The ground floor: configuration, errors, logging, database access, JARs, the Spark
session and the embedded services. Nothing here imports the stages or the operator layer."""

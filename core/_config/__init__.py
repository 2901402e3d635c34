"""What a user configures: ``settings`` (the MODELBROKER_* variables), providers.yaml's
models (``providers``) and how the file is read (``loading``), and the ``messages`` that say
where a mistake is."""

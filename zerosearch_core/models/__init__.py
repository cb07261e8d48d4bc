"""Models: build, save and load the tiny policies and their tokenizers (:mod:`.build`), the generation backends the
agent loop runs on with the trainer-to-vLLM weight sync (:mod:`.generation`), and vLLM in process or as a server
(:mod:`.vllm_backend`)."""

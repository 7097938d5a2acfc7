"""A local vision-language model with Hugging Face transformers, loaded from a directory the
user provides (e.g. Qwen2.5-VL, SmolVLM). Nothing is downloaded: local_files_only. Runs on the
GPU when one is present."""

from twinloop_scoring.vlm import VLMBackend, VLMError, VLMReply


class TransformersBackend(VLMBackend):
    """VLM backend running a local image-text-to-text model with transformers (bfloat16 on CUDA)."""

    name = 'transformers'
    is_vlm = True

    def __init__(self, model_dir, max_new_tokens=512):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = str(model_dir)
        self.device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        self.vlm = AutoModelForImageTextToText.from_pretrained(
            model_dir, local_files_only=True, torch_dtype=torch.bfloat16 if self.device == 'cuda' else torch.float32
        ).to(self.device)
        self.max_new_tokens = max_new_tokens

    def _one(self, request):
        from PIL import Image

        content = [{'type': 'image'} for _ in request.images] + [{'type': 'text', 'text': request.prompt}]
        messages = [{'role': 'system', 'content': [{'type': 'text', 'text': request.system}]}] if request.system else []
        messages.append({'role': 'user', 'content': content})
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(
            text=text, images=[Image.fromarray(i) for i in request.images] or None, return_tensors='pt'
        ).to(self.device)
        sample = request.temperature > 0
        output = self.vlm.generate(
            **inputs,
            max_new_tokens=min(self.max_new_tokens, request.max_tokens),
            do_sample=sample,
            temperature=request.temperature if sample else None,
        )
        new = output[0][inputs['input_ids'].shape[1] :]
        return VLMReply(self.processor.decode(new, skip_special_tokens=True), self.name, self.model)

    def complete(self, requests):
        """One reply or VLMError per request, same order; requests run one at a time."""
        replies = []
        for request in requests:
            try:
                replies.append(self._one(request))
            except (RuntimeError, ValueError) as exc:
                replies.append(VLMError(f'generation failed: {exc}', self.name, self.model))
        return replies


8
	llama-70bOnce upon a time  *млL?(33s? *2.2

@
"""Training (imports nothing heavy; TensorFlow is imported inside the functions that need it).

datasets.build_dataset  embedded image folders (shapes: procedural; textures: real-photo crops)
data.load_data          folder scan, image validation/conversion, seeded split; load_image_tf
models.build_model      the model registry (tiny_cnn, mobilenet_v2_tiny, keras.applications backbones)
trainer.train           TrainConfig -> a run folder (run_dir describes it)
session.Session         one worker's model, optimizer and epoch loop; loop: the train step and phases
distributed             cluster topology (TF_CONFIG, --cluster) and the tf.distribute strategy
launch.launch_local     --workers N: local worker processes on 127.0.0.1
"""
